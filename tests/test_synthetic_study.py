"""The synthetic-data study's plan (bench/synthetic_study.py): which arm trains on what, with which options.
Its stages are replaced by a recorder here; the real commands are covered by the train/export/evaluate tests."""
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_study():
    spec = importlib.util.spec_from_file_location("synthetic_study", ROOT / "bench" / "synthetic_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arms_take_their_own_options_and_finetuning_starts_from_the_synthetic_segmenter(tmp_path, monkeypatch):
    study = load_study()
    (tmp_path / "synthetic_concat" / "images").mkdir(parents=True)
    (tmp_path / "synthetic_concat" / "images" / "img_0.png").write_bytes(b"")  # already generated
    trained = []

    def fake_run(cmd, log):
        stage = cmd[3]
        out = Path(cmd[cmd.index("--output_dir") + 1] if "--output_dir" in cmd else cmd[cmd.index("--out") + 1])
        if stage == "train":
            trained.append(cmd)
            out.mkdir(parents=True, exist_ok=True)
        elif stage == "export":
            out.with_suffix(".safetensors").write_bytes(b"")
        elif stage == "evaluate":
            out.mkdir(parents=True)
            mean = {c: 0.5 for c in study.COLUMNS}
            (out / "metrics.json").write_text(json.dumps({"settings": {"threshold": 0.6}, "num_images": 2,
                                                          "mean": mean}))

    monkeypatch.setattr(study, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["synthetic_study.py", "--data_root", "D", "--sources", "concat", "--num", "1",
                                      "--jobs", "1", "--finetune", "--train_args", "--vessel_fade 0.6",
                                      "--real_args", "--fov_margin_px 4", "--out", str(tmp_path)])
    study.main()
    arms = {Path(cmd[cmd.index("--output_dir") + 1]).name: cmd for cmd in trained}
    assert list(arms) == ["arm_real", "arm_synthetic_concat", "arm_real+synthetic_concat",
                          "arm_synthetic_concat_then_real"]  # fine-tuning last: it needs the synthetic segmenter
    for name, cmd in arms.items():
        synthetic = "--synthetic_root" in cmd
        assert ("--vessel_fade" in cmd) == synthetic and ("--fov_margin_px" in cmd) != synthetic, name
    finetune = arms["arm_synthetic_concat_then_real"]
    start = finetune[finetune.index("--init_weights") + 1]
    assert start == str(tmp_path / "arm_synthetic_concat" / "segment.safetensors")
    assert "--init_weights" not in arms["arm_real"]
    table = (tmp_path / "study.md").read_text()
    assert "| synthetic_concat_then_real | 0.60 |" in table and "--fov_margin_px 4" in table


def test_synthetic_pairs_carry_the_tree_options(tmp_path, monkeypatch):
    study = load_study()
    commands = []
    monkeypatch.setattr(study, "run", lambda cmd, log: commands.append(cmd[3:]))

    def generate_command(*options):
        args = study.parse_args(["--data_root", "D", "--num", "2", "--out", str(tmp_path / str(len(commands))),
                                 *options])
        study.synthesise(args, "spade")
        return commands[-1]

    assert "--twig_spacing" not in generate_command()  # generate's own default
    dense = generate_command("--twig_spacing", "20")
    assert dense[dense.index("--twig_spacing") + 1] == "20.0" and "--twigs" in dense
    bare = generate_command("--no_twigs", "--twig_spacing", "20")
    assert "--no_twigs" in bare and "--twig_spacing" not in bare
    assert "--twigs" not in generate_command("--trees", "procedural")  # procedural trees have their own
