"""The prepared accelerator session (bench/gpu_session.py, `./run.sh gpu`) end to end on the tiny preset:
it trains, exports and measures each model into one folder small enough to bring back."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from retree_core.weights import load_model  # noqa: E402


def test_gpu_session_writes_weights_and_figures_within_the_limits(tmp_path):
    import gpu_session

    out = tmp_path / "out"
    assert gpu_session.main(["--preset", "tiny", "--image_size", "16", "--max_steps", "2", "--from_scratch",
                             "--modes", "sr", "concat", "vessel", "--segmenter", "classical",
                             "--trees", "2", "--batch_size", "2", "--precision", "fp32", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["concat.json", "concat.safetensors", "figures.md", "sr.json", "sr.safetensors", "vessel.json",
                     "vessel.safetensors"]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    assert load_model(out / "sr.safetensors", role="sr").net_cfg.image_size == 4 * 16  # 4x the generators' size
    for mode in ("sr", "vessel", "concat"):
        model = load_model(out / f"{mode}.safetensors", role=mode)
        assert model.trained_steps == 2
    assert load_model(out / "concat.safetensors").guidance == gpu_session.RECOMMENDED_GUIDANCE
    figures = (out / "figures.md").read_text()
    assert "| vessel | 2 | kept " in figures and "| sr | 2 | PSNR " in figures
    assert "| concat | 2 | fidelity at 64 px " in figures  # super-resolved by the session's own sr
    assert not (out / "runs").exists() and (tmp_path / "out_runs" / "concat" / "last.ckpt").exists()


def test_gpu_session_refuses_more_models_than_the_folder_holds(tmp_path, capsys):
    import gpu_session

    with pytest.raises(SystemExit):
        gpu_session.main(["--modes", "sr", "concat", "spade", "vessel", "--out", str(tmp_path / "out")])
    assert "at most 8" in capsys.readouterr().err and not (tmp_path / "out").exists()
