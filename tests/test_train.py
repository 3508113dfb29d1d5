"""The training loop: a few steps run, resume reproduces an uninterrupted run exactly, DDP under
torchrun equals one process with the same global batch, and the CLI round trip (train, export, generate)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from retree_core.checkpoint import load_checkpoint
from retree_core.cli import main
from retree_core.config import TrainConfig
from retree_core.train import lr_factor, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_cfg(out, **kw):
    base = dict(mode="concat", preset="tiny", image_size=16, batch_size=4, max_steps=6, sample_interval=1000,
                checkpoint_interval=3, output_dir=str(out), progress=False, seed=1,
                precision="fp32")  # rounding-level comparisons below; bf16 in tests/test_precision.py
    return TrainConfig(**{**base, **kw})


def states_equal(a, b, atol=0.0):
    return all(torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0) for k in a)


@pytest.mark.parametrize("mode", ["vessel", "spade"])
def test_train_writes_checkpoint_log_and_samples(tmp_path, mode):
    path = train(tiny_cfg(tmp_path, mode=mode, max_steps=4, sample_interval=2))
    state = load_checkpoint(path)
    assert state["step"] == 4 and state["config"]["net"]["role"] == mode
    rows = [json.loads(r) for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all({"epoch", "loss", "lr", "images_per_s"} <= set(r) for r in rows)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]


def test_vessel_run_mixes_procedural_trees(tmp_path):
    from retree_core.train import training_dataset

    cfg = tiny_cfg(tmp_path, mode="vessel", max_steps=2, procedural_fraction=0.5)
    names = [training_dataset(cfg)[(i, i)]["name"] for i in range(40)]
    assert "skimage-retina" in names and any(n.startswith("procedural/") for n in names)
    assert train(cfg).exists()
    assert training_dataset(tiny_cfg(tmp_path, mode="vessel", procedural_fraction=1.0))[(0, 0)]["name"] == "procedural/0"
    with pytest.raises(ValueError, match="procedural_fraction"):
        training_dataset(tiny_cfg(tmp_path, mode="concat", procedural_fraction=0.5))


def test_soft_trees_keep_the_tree_as_their_positive_part_and_reach_a_vessel_run(tmp_path):
    from retree_core.roles import Denoise
    from retree_core.tree_ops import soft_trees
    from retree_core.train import training_dataset

    masks = -torch.ones(3, 1, 9, 9)
    masks[0, 0, 4, :] = 1  # a one-pixel vessel
    masks[2] = 1  # all vessel (the second: none)
    soft = soft_trees(masks, 1.5)
    assert torch.equal(soft > 0, masks > 0)
    column = soft[0, 0, :, 4]
    assert torch.all(column[:4].diff() > 0) and torch.all(column[5:].diff() < 0)  # a ridge on the vessel
    assert 0.2 < column[4] < 0.5 and column[3] == -column[4]  # the edge halfway between the two pixels
    assert soft[1].max() == -1 and soft[2].min() == 1
    def role(**kw):
        cfg = tiny_cfg(tmp_path, mode="vessel", **kw)
        return Denoise(cfg, cfg.net(), cfg.diffusion(), torch.device("cpu"))

    x0, cond = role(soft_tree_px=1.5).inputs({"mask": masks})
    assert cond is None and torch.equal(x0, soft)  # what the vessel model learns
    assert torch.equal(role().inputs({"mask": masks})[0], masks)
    assert train(tiny_cfg(tmp_path, mode="vessel", max_steps=2, soft_tree_px=1.5)).exists()
    with pytest.raises(ValueError, match="soft_tree_px.*--mode vessel"):
        training_dataset(tiny_cfg(tmp_path, mode="concat", soft_tree_px=1.5))


def test_augmentation_options_reach_the_training_items(tmp_path, capsys):
    from retree_core.train import training_dataset

    cfg = tiny_cfg(tmp_path, mode="segment", image_size=32, vessel_fade=0.7, blur_sigma=1.5, noise_std=4.0,
                   vessel_reflex=0.3, illumination=0.4, color_jitter=0.0)
    dataset = training_dataset(cfg)
    got = dataset.augment_cfg
    assert (got.vessel_fade, got.blur_sigma, got.noise_std, got.vessel_reflex, got.illumination,
            got.color_jitter) == (0.7, 1.5, 4.0, 0.3, 0.4, 0.0)
    plain = training_dataset(tiny_cfg(tmp_path, mode="segment", image_size=32, color_jitter=0.0))
    assert torch.equal(dataset[(0, 3)]["mask"], plain[(0, 3)]["mask"])
    assert not torch.equal(dataset[(0, 3)]["image"], plain[(0, 3)]["image"])
    from PIL import Image  # with synthetic pairs the extras are theirs: real photographs keep faint vessels

    image, mask = np.full((24, 24, 3), (170, 90, 40), np.uint8), np.zeros((24, 24), np.uint8)
    mask[10:13] = 255
    image[mask > 0] = (90, 40, 20)
    for folder, array in (("images/img_a.png", image), ("masks/seg_a.png", mask)):
        (tmp_path / "syn" / folder).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(tmp_path / "syn" / folder)
    mixed = training_dataset(tiny_cfg(tmp_path, mode="segment", image_size=32, vessel_fade=0.7,
                                      synthetic_root=[str(tmp_path / "syn")]))
    assert mixed.synthetic.augment_cfg.vessel_fade == 0.7 and mixed.real.augment_cfg.vessel_fade == 0.0
    with pytest.raises(SystemExit):
        main(["train", "--mode", "segment", "--vessel_fade", "1.5", "--output_dir", str(tmp_path / "x")])
    for extra in ({"blur_sigma": 1.0}, {"illumination": 0.5}, {"vessel_reflex": 0.5},
                  {"vessel_fade": 0.5, "augment": False}):
        with pytest.raises(ValueError, match="for --mode segment"):
            training_dataset(tiny_cfg(tmp_path, mode="concat", **extra))
    assert "--vessel_fade" in capsys.readouterr().err


def test_loss_decreases_on_the_embedded_default(tmp_path):
    train(tiny_cfg(tmp_path, max_steps=60, lr=2e-3, checkpoint_interval=100))
    losses = [json.loads(r)["loss"] for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_resume_matches_an_uninterrupted_run(tmp_path):
    full = load_checkpoint(train(tiny_cfg(tmp_path / "full")))
    stop_after = iter(range(100))
    part = tmp_path / "part"
    # interrupted after 4 steps: the checkpoint of step 3 is on disk, and the stop saves step 4
    train(tiny_cfg(part), should_stop=lambda: next(stop_after) >= 4)
    assert load_checkpoint(part / "last.ckpt")["step"] == 4
    resumed = load_checkpoint(train(tiny_cfg(part, resume=True)))
    assert resumed["step"] == full["step"] == 6
    assert states_equal(full["model"], resumed["model"])
    assert states_equal(full["ema"], resumed["ema"])
    rows = [json.loads(r)["step"] for r in (part / "log.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_other_settings(tmp_path):
    train(tiny_cfg(tmp_path, max_steps=3))
    with pytest.raises(ValueError, match="resume with the same settings"):
        train(tiny_cfg(tmp_path, mode="spade", max_steps=6, resume=True))


def test_grad_accumulation_matches_a_larger_batch(tmp_path):
    big = load_checkpoint(train(tiny_cfg(tmp_path / "big", batch_size=4, max_steps=2)))
    acc = load_checkpoint(train(tiny_cfg(tmp_path / "acc", batch_size=2, grad_accum=2, max_steps=2)))
    half = load_checkpoint(train(tiny_cfg(tmp_path / "half", batch_size=2, max_steps=2)))
    # Adam turns float rounding in near-zero gradients into differences of a few 1e-5; another batch
    # moves the weights by ~1e-3
    assert states_equal(big["model"], acc["model"], atol=1e-4)
    assert not states_equal(big["model"], half["model"], atol=5e-4)


def test_torchrun_two_processes_equal_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "retree_core", "train", "--mode", "concat", "--preset", "tiny", "--image_size", "16",
           "--batch_size", "2", "--max_steps", "3", "--seed", "1", "--sample_interval", "1000",
           "--checkpoint_interval", "3", "--output_dir", str(tmp_path / "ddp"), "--no_progress",
           "--precision", "fp32"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_checkpoint(tmp_path / "ddp" / "last.ckpt")
    single = load_checkpoint(train(tiny_cfg(tmp_path / "one", batch_size=4, max_steps=3)))
    assert ddp["step"] == 3
    assert states_equal(single["model"], ddp["model"], atol=1e-4)  # rounding only (see grad accumulation)


def test_cli_train_export_generate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--mode", "concat", "--preset", "tiny", "--image_size", "16", "--max_steps", "2",
                 "--output_dir", str(run), "--no_progress"]) == 0
    assert main(["export", "--checkpoint", str(run / "last.ckpt"), "--out", str(tmp_path / "w" / "concat")]) == 0
    weights = tmp_path / "w" / "concat.safetensors"
    assert weights.exists() and (tmp_path / "w" / "concat.json").exists()
    masks = tmp_path / "masks"
    masks.mkdir()
    from PIL import Image
    m = np.zeros((40, 40), np.uint8)
    m[18:22, :] = 255
    m[:, 5:8] = 255
    Image.fromarray(m).save(masks / "seg_a.png")
    Image.fromarray(255 - m).convert("RGB").save(masks / "b.jpg")  # RGB, inverted: still has vessels
    out = tmp_path / "gen"
    assert main(["generate", "--weights", str(weights), "--masks", str(masks), "--steps", "3",
                 "--output_dir", str(out)]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["img_a.png", "img_b.png"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["seg_a.png", "seg_b.png"]
    assert Image.open(out / "images" / "img_a.png").size == (16, 16)
    raw = tmp_path / "raw"  # the same images without the round aperture generate finishes them with
    assert main(["generate", "--weights", str(weights), "--masks", str(masks), "--steps", "3", "--no_aperture",
                 "--output_dir", str(raw)]) == 0
    from retree_core.aperture import apply_aperture
    unfinished = np.array(Image.open(raw / "images" / "img_a.png"))
    assert np.array_equal(np.array(Image.open(out / "images" / "img_a.png")), apply_aperture(unfinished)[0])
    # a wrong role is refused with a message, not a crash
    assert main(["generate", "--mode", "spade", "--weights", str(weights), "--masks", str(masks),
                 "--output_dir", str(out)]) == 1
    assert "is a 'concat' model" in capsys.readouterr().err
    # both stages without a vessel model: a message that names the way out, then procedural trees
    dreamt = tmp_path / "dreamt"
    assert main(["generate", "--weights", str(weights), "--num", "2", "--vessel_weights", str(tmp_path / "none"),
                 "--output_dir", str(dreamt)]) == 1
    assert "--trees procedural" in capsys.readouterr().err
    assert main(["generate", "--weights", str(weights), "--num", "2", "--trees", "procedural", "--steps", "2",
                 "--output_dir", str(dreamt)]) == 0
    assert sorted(p.name for p in (dreamt / "images").iterdir()) == ["img_00000.png", "img_00001.png"]
    from retree_core.data.layouts import find_samples
    sample = find_samples(dreamt)[1]  # the aperture's field of view comes with each pair
    image, fov = np.array(Image.open(sample.image)), np.array(Image.open(sample.fov)) > 0
    assert fov.any() and not fov.all() and not image[~fov].any()
    assert Image.open(dreamt / "masks" / "seg_00001.png").size == (16, 16)
    capsys.readouterr()
    # with a stage-1 model: an untrained one draws noise, which the filter rejects in every draw, so
    # procedural trees stand in and the run says so; without the filter its own trees are used
    assert main(["train", "--mode", "vessel", "--preset", "tiny", "--image_size", "16", "--max_steps", "1",
                 "--output_dir", str(tmp_path / "vrun"), "--no_progress"]) == 0
    vessel = tmp_path / "vrun" / "last.ckpt"
    assert main(["generate", "--weights", str(weights), "--num", "3", "--vessel_weights", str(vessel), "--steps", "2",
                 "--tree_tries", "2", "--no_aperture", "--output_dir", str(tmp_path / "stood_in")]) == 0
    assert "3 stage-1 tree(s) stayed below the plausibility threshold in 2 draws" in capsys.readouterr().out
    assert main(["generate", "--weights", str(weights), "--num", "3", "--vessel_weights", str(vessel), "--steps", "2",
                 "--min_plausibility", "0", "--no_aperture", "--output_dir", str(tmp_path / "own")]) == 0
    assert "stayed below" not in capsys.readouterr().out
    assert all(np.array(Image.open(tmp_path / "own" / "masks" / f"seg_0000{i}.png")).any() for i in range(3))
    assert not (tmp_path / "own" / "fov").exists()  # without the aperture a loader estimates the FOV


def test_procedural_stage_one_varies_per_seed():
    from retree_core.pipeline import tree_masks
    masks, stand_ins = tree_masks(None, [3, 4], 64, first_seed=3)
    assert masks.shape == (2, 64, 64) and stand_ins == 0
    assert all(0.02 < m.mean() < 0.3 for m in masks) and not np.array_equal(masks[0], masks[1])


def test_procedural_trees_stand_in_for_implausible_stage_one_trees(tmp_path):
    from retree_core.data import mask_at
    from retree_core.pipeline import generate, vessel_masks
    from retree_core.pipeline import tree_masks
    from retree_core.twigs import add_twigs
    from retree_core.weights import load_model

    train(TrainConfig(mode="vessel", preset="tiny", image_size=32, max_steps=1, output_dir=str(tmp_path),
                      progress=False))
    vessel = load_model(tmp_path / "last.ckpt", role="vessel")  # untrained: noise, not trees
    procedural, _ = tree_masks(None, [3, 4], 64, first_seed=3)
    masks, stand_ins = tree_masks(vessel, [3, 4], 64, first_seed=3, max_tries=2, steps=2)
    assert stand_ins == 2 and np.array_equal(masks, procedural)
    masks, stand_ins = tree_masks(vessel, [3, 4], 64, first_seed=3, min_plausibility=0, steps=2)
    own = generate(vessel, None, [3, 4], steps=2)
    assert stand_ins == 0 and np.array_equal(masks, vessel_masks(own, 64))  # from the soft output at 64 px
    nearest = np.stack([mask_at(m, 64) for m in vessel_masks(own)])  # not the 32 px cut enlarged
    assert not np.array_equal(masks, nearest)
    twigged, _ = tree_masks(vessel, [3, 4], 64, first_seed=3, min_plausibility=0, twigs=True, steps=2)
    assert np.array_equal(twigged, np.stack([add_twigs(m, seed) for m, seed in zip(masks, [3, 4])]))
    dense, _ = tree_masks(vessel, [3, 4], 64, first_seed=3, min_plausibility=0, twigs=True, twig_spacing=9, steps=2)
    assert np.array_equal(dense, np.stack([add_twigs(m, seed, 9) for m, seed in zip(masks, [3, 4])]))
    stood_in, _ = tree_masks(vessel, [3, 4], 64, first_seed=3, max_tries=2, twigs=True, steps=2)
    assert np.array_equal(stood_in, procedural)  # procedural trees have their own thin vessels


def test_resume_drops_a_torn_log_line(tmp_path):
    train(tiny_cfg(tmp_path, max_steps=3))
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 4, "epo')  # a row cut by a kill mid-write
    train(tiny_cfg(tmp_path, max_steps=5, resume=True))
    rows = [json.loads(r)["step"] for r in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4, 5]


def test_init_weights_starts_a_new_run_from_a_model_file(tmp_path, tiny_weights):
    """--init_weights: a new run's first state is the file's weights; the step count starts at zero."""
    from retree_core.weights import load_model

    path = train(tiny_cfg(tmp_path, max_steps=1, lr=1e-12, init_weights=str(tiny_weights)))
    state, shipped = load_checkpoint(path), load_model(tiny_weights).net.state_dict()
    assert state["step"] == 1
    assert states_equal(state["model"], shipped, atol=1e-6)  # one step at a negligible learning rate
    assert states_equal(state["ema"], shipped, atol=1e-6)
    # the exported model counts the file's steps too, also after a resume
    from retree_core.weights import export_weights, load_model as load

    before = load(tiny_weights).trained_steps
    assert before > 0 and state["init_steps"] == before
    train(tiny_cfg(tmp_path, max_steps=3, lr=1e-12, init_weights=str(tiny_weights), resume=True))
    exported = export_weights(tmp_path / "last.ckpt", tmp_path / "continued")
    assert json.loads(exported.with_suffix(".json").read_text())["trained_steps"] == before + 3
    assert load(exported).trained_steps == load(tmp_path / "last.ckpt").trained_steps == before + 3


def test_init_weights_refuses_another_network(tmp_path, tiny_weights):
    with pytest.raises(ValueError, match=r"image_size 16 \(this run: 32\)"):
        train(tiny_cfg(tmp_path, image_size=32, init_weights=str(tiny_weights)))
    with pytest.raises(ValueError, match="a 'spade' model is needed"):
        train(tiny_cfg(tmp_path, mode="spade", init_weights=str(tiny_weights)))


def test_max_minutes_stops_with_a_checkpoint_that_resumes(tmp_path):
    path = train(tiny_cfg(tmp_path, max_steps=50, max_minutes=1e-9, sample_interval=1000))
    assert load_checkpoint(path)["step"] == 1  # the budget was spent after the first step
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_0000001.png"]
    assert load_checkpoint(train(tiny_cfg(tmp_path, max_steps=3, resume=True)))["step"] == 3


def test_channels_last_trains_in_that_layout_the_same_function(tmp_path):
    from retree_core.nets import build_net

    cfg = tiny_cfg(tmp_path, max_steps=2, channels_last=True)
    state = load_checkpoint(train(cfg))
    assert any(v.ndim == 4 and v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous()
               for v in state["model"].values())
    net = build_net(cfg.net(), cfg.diffusion()).eval()
    net.load_state_dict(state["model"])
    x, t, mask = torch.randn(2, 3, 16, 16), torch.tensor([10, 900]), torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        plain = net(x, t, mask)
        last = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t, mask)
    assert torch.allclose(plain, last, atol=1e-5)  # the layout changes rounding only


def test_cooldown_decays_the_learning_rate_linearly_over_the_last_steps(tmp_path):
    assert [lr_factor(s, 10, 4) for s in (0, 5, 6, 7, 8, 9)] == [1, 1, 1, 0.75, 0.5, 0.25]
    assert lr_factor(9, 10, 0) == 1  # no cooldown: constant
    full = load_checkpoint(train(tiny_cfg(tmp_path / "full", cooldown_steps=3, lr=1e-3)))
    logged = [json.loads(r)["lr"] for r in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])
    stop_after = iter(range(100))  # a run stopped inside its cooldown resumes at the rate it had reached
    train(tiny_cfg(tmp_path / "part", cooldown_steps=3, lr=1e-3), should_stop=lambda: next(stop_after) >= 5)
    resumed = load_checkpoint(train(tiny_cfg(tmp_path / "part", cooldown_steps=3, lr=1e-3, resume=True)))
    assert states_equal(full["model"], resumed["model"])
    constant = load_checkpoint(train(tiny_cfg(tmp_path / "constant", lr=1e-3)))
    assert not states_equal(full["model"], constant["model"], atol=1e-6)
