"""The vessel segmenter: loss, whole-image prediction at any size, threshold choice, a short training run
through the shared loop, and evaluation with a learned segmenter."""
import json

import numpy as np
import pytest
import torch

from retree_core.config import TrainConfig, net_config
from retree_core.nets import build_net
from retree_core.segmentation import (best_threshold, load_learned_segmenter, predict_vessels,
                                      segmentation_loss)
from retree_core.train import train
from retree_core.weights import LoadedModel
from test_evaluate import seed_dataset  # noqa: F401  (fixture: a two-image dataset in the seed layout)


def test_loss_rewards_the_right_vessels_and_ignores_outside_the_fov():
    mask = -torch.ones(2, 1, 8, 8)
    mask[:, :, 3:5, :] = 1
    fov = torch.ones(2, 1, 8, 8)
    fov[:, :, :, :2] = 0
    right, wrong = 20 * mask, -20 * mask
    assert segmentation_loss(right, mask, fov) < 0.01 < 1.0 < segmentation_loss(wrong, mask, fov)
    outside_changed = right.clone()
    outside_changed[:, :, :, :2] = -right[:, :, :, :2]  # wrong, but only outside the FOV
    assert torch.isclose(segmentation_loss(outside_changed, mask, fov), segmentation_loss(right, mask, fov))


def test_loss_margin_covers_a_band_beyond_the_fov():
    mask = -torch.ones(1, 1, 8, 8)
    fov = torch.zeros(1, 1, 8, 8)
    fov[:, :, :, 4:] = 1
    right = 20 * mask
    rim_wrong = right.clone()
    rim_wrong[:, :, :, 3] = 20  # a "vessel" found on the rim, one pixel beyond the FOV
    far_wrong = right.clone()
    far_wrong[:, :, :, 0] = 20  # and four pixels beyond it
    assert torch.isclose(segmentation_loss(rim_wrong, mask, fov), segmentation_loss(right, mask, fov))
    assert segmentation_loss(rim_wrong, mask, fov, margin_px=1) > 1.0 > segmentation_loss(right, mask, fov, margin_px=1)
    assert torch.isclose(segmentation_loss(far_wrong, mask, fov, margin_px=2), segmentation_loss(right, mask, fov))


def test_best_threshold_finds_the_separating_value():
    rng = np.random.default_rng(0)
    prob = rng.uniform(size=(2, 40, 40)).astype(np.float32)
    truth = prob > 0.37
    fov = np.ones_like(truth)
    assert abs(best_threshold(list(prob), list(truth), list(fov)) - 0.37) <= 0.011


def tiny_segmenter(size=32) -> LoadedModel:
    torch.manual_seed(0)
    cfg = net_config("tiny", "segment", size)
    return LoadedModel(build_net(cfg).eval(), cfg, None, "test")


def test_segmenter_has_no_noise_skip_and_predicts_any_image_size():
    model = tiny_segmenter()
    assert not model.net_cfg.input_skip and model.net_cfg.input_channels == 3
    image = np.random.default_rng(1).integers(0, 255, (70, 93, 3), dtype=np.uint8)
    fov = np.zeros((70, 93), bool)
    fov[5:65, 10:80] = True
    prob = predict_vessels(model, image, fov)
    assert prob.shape == (70, 93) and prob.dtype == np.float32
    assert (prob[~fov] == 0).all() and (prob[fov] > 0).all() and (prob <= 1).all()


def test_train_segment_learns_and_evaluates(tmp_path, seed_dataset):
    from retree_core.evaluate import evaluate_segmenter

    data = seed_dataset
    cfg = TrainConfig(mode="segment", preset="tiny", image_size=32, batch_size=4, max_steps=40, lr=3e-3,
                      data_root=[str(data)], sample_interval=40, checkpoint_interval=20,
                      output_dir=str(tmp_path / "run"), progress=False)
    ckpt = train(cfg)
    rows = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert np.mean(rows[-5:]) < 0.8 * np.mean(rows[:5])  # it learns
    assert (tmp_path / "run" / "samples" / "step_0000040.png").exists()
    from retree_core.cli import main
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "w" / "segmenter")]) == 0
    segmenter = load_learned_segmenter(str(tmp_path / "w" / "segmenter.safetensors"))
    assert 0.05 <= segmenter.threshold <= 0.95 and segmenter.model.net_cfg.role == "segment"
    report = evaluate_segmenter(segmenter, [str(data)], "all")
    assert len(report.rows) == 2 and 0 <= report.mean()["f1"] <= 1
    assert report.settings["threshold"] == segmenter.threshold


def test_patch_training_on_a_real_and_synthetic_mix(tmp_path, seed_dataset):
    from retree_core.train import training_dataset

    cfg = TrainConfig(mode="segment", preset="tiny", image_size=32, crop_px=16, batch_size=4, max_steps=4,
                      data_root=None, synthetic_root=[str(seed_dataset)], synthetic_fraction=0.5,
                      sample_interval=4, checkpoint_interval=4, output_dir=str(tmp_path / "run"), progress=False)
    names = {training_dataset(cfg)[(i, i)]["name"] for i in range(30)}
    assert names == {"skimage-retina", "synthetic/0", "synthetic/1"}  # the embedded example, both synthetic pairs
    assert train(cfg).exists()
    only = training_dataset(TrainConfig(mode="segment", image_size=32, synthetic_root=[str(seed_dataset)],
                                        synthetic_fraction=1.0))
    assert len(only) == 2 and only[(0, 0)]["image"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="crop_px"):
        training_dataset(TrainConfig(mode="concat", image_size=32, crop_px=16))
