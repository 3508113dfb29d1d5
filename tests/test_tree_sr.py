"""Stage 1's super-resolution (role treesr): its training input is the vessel model's target made from an
annotation, a run trains and exports, and generation, the CLI and the app's catalogue use it for trees
larger than the vessel model's."""
import numpy as np
import pytest
import torch

from retree_core.config import ConfigError, TrainConfig
from retree_core.pipeline import dream_trees, generate, vessel_masks
from retree_core.segmentation import export_run
from retree_core.superres import bicubic
from retree_core.train import train
from retree_core.tree_ops import soft_trees
from retree_core.tree_sr import tree_sr_input, upscale_trees, with_tree_sr
from retree_core.weights import load_model


def run(tmp_path, name, **kw):
    base = dict(preset="tiny", batch_size=2, max_steps=3, sample_interval=1000, checkpoint_interval=1000,
                output_dir=str(tmp_path / name), progress=False, seed=1, precision="fp32")
    checkpoint = train(TrainConfig(**{**base, **kw}))
    return export_run(checkpoint, tmp_path / "weights" / name)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny treesr (32 px out of 8 px) and tiny vessel models at 8 and 16 px."""
    tmp = tmp_path_factory.mktemp("tree_sr")
    return {"treesr": run(tmp, "tree_model", mode="treesr", image_size=32, crop_px=16, soft_tree_px=1.5),
            "vessel": run(tmp, "vessel", mode="vessel", image_size=8, soft_tree_px=1.5),
            "vessel16": run(tmp, "vessel16", mode="vessel", image_size=16, soft_tree_px=1.5)}


def test_the_input_is_the_vessel_models_target_enlarged_and_noised_per_item():
    masks = -torch.ones(1, 1, 32, 32)
    masks[0, 0, 12:16, :] = 1  # four pixels wide: one pixel of the 8 px target
    masks[0, 0, :, 21] = 1  # one pixel wide: under half of a target pixel, so not in the target
    coarse = -torch.ones(1, 1, 8, 8)
    coarse[0, 0, 3, :] = 1
    plain = tree_sr_input(masks, 4, 1.5)
    assert torch.equal(plain, bicubic(soft_trees(coarse, 1.5), (32, 32)))
    assert plain[0, 0, 14, 2] > 0 and plain[0, 0, 2, 21] < 0  # the thin vessel is what treesr has to draw
    assert torch.equal(tree_sr_input(masks, 4, 0.0), bicubic(coarse, (32, 32)))  # binary target
    items = [(0, 11)]
    noisy = tree_sr_input(masks, 4, 1.5, items, 0.3)
    assert not torch.equal(noisy, plain) and torch.equal(noisy, tree_sr_input(masks, 4, 1.5, items, 0.3))
    assert not torch.equal(noisy, tree_sr_input(masks, 4, 1.5, [(0, 12)], 0.3))


def test_options_are_checked_for_the_role():
    tree_sr = TrainConfig(mode="treesr", preset="tiny", image_size=32, crop_px=16, soft_tree_px=1.5)
    assert (tree_sr.input_noise, TrainConfig(mode="sr").input_noise) == (0.3, 0.1)  # each role's default
    assert TrainConfig(mode="treesr", sr_input_noise=0.0).input_noise == 0.0  # given: as given
    with pytest.raises(ConfigError, match="crop_px 12 must be a multiple of 8"):
        TrainConfig(mode="treesr", preset="tiny", image_size=32, crop_px=12)


def test_trees_from_a_treesr_model(models):
    tree_sr = load_model(models["treesr"], role="treesr")
    assert tree_sr.net_cfg.sr_input_px == 8
    soft = torch.rand(2, 1, 8, 8) * 2 - 1
    trees = upscale_trees(tree_sr, soft)
    assert trees.shape == (2, 32, 32) and trees.dtype == bool
    assert np.array_equal(vessel_masks(soft, 32, tree_sr=tree_sr), trees)
    assert vessel_masks(soft, 64, tree_sr=tree_sr).shape == (2, 64, 64)  # resized from its own size
    assert np.array_equal(vessel_masks(soft, tree_sr=tree_sr), vessel_masks(soft))  # at the model's size: cut
    with pytest.raises(ValueError, match="needs a treesr model"):
        upscale_trees(load_model(models["vessel"]), soft)


def test_stage_one_uses_the_attached_treesr_model(models, tmp_path, monkeypatch):
    vessel = with_tree_sr(load_model(models["vessel"], role="vessel"), str(models["treesr"]))
    assert vessel.tree_sr is not None
    trees, seeds = dream_trees(vessel, [0, 1], size_px=32)
    raw = generate(vessel, None, seeds)
    for tree, expected, small in zip(trees, upscale_trees(vessel.tree_sr, raw), vessel_masks(raw)):
        assert tree is None if not small.any() else np.array_equal(tree, expected)
    assert with_tree_sr(vessel, "none").tree_sr is None
    with pytest.raises(ValueError, match="upscales 8 px images, but the generator makes 16 px"):
        with_tree_sr(load_model(models["vessel16"]), str(models["treesr"]))
    monkeypatch.setattr("retree_core.weights.WEIGHTS_DIR", tmp_path)  # auto: no shipped treesr here
    assert with_tree_sr(vessel, "auto").tree_sr is None


def test_the_apps_stage_one_is_the_default_vessel_model_with_a_treesr_model_that_fits(models, tmp_path):
    import shutil

    from retree_studio.catalog import ModelCatalog

    weights = tmp_path / "weights"
    weights.mkdir()
    catalog = ModelCatalog(weights, tmp_path / "runs")
    assert catalog.stage_one() is None  # no vessel model
    shutil.copy(models["vessel16"], weights / "vessel.safetensors")
    shutil.copy(models["treesr"], weights / "treesr.safetensors")
    assert catalog.stage_one().tree_sr is None  # the treesr takes 8 px trees, this vessel model draws 16 px
    shutil.copy(models["vessel"], weights / "vessel.safetensors")
    stage_one = catalog.stage_one()
    assert stage_one.net_cfg.image_size == 8 and stage_one.tree_sr.net_cfg.role == "treesr"
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(weights / "treesr.safetensors", framework="pt") as f:  # a treesr header over wrong weights:
        metadata = f.metadata()  # listed as a treesr model, but it does not load
    save_file({"x": torch.zeros(1)}, weights / "treesr.safetensors", metadata=metadata)
    problems = []
    stage_one = catalog.stage_one(on_problem=problems.append)
    assert stage_one.net_cfg.role == "vessel" and stage_one.tree_sr is None
    assert len(problems) == 1 and "treesr.safetensors" in problems[0] and "cut without it" in problems[0]
