"""Every model in weights/ loads without unpickling, is described by the model card, and produces an image."""
from pathlib import Path

import numpy as np
import pytest
import torch

from retree_core.data.procedural import procedural_tree
from retree_core.pipeline import generate
from retree_core.weights import WEIGHTS_DIR, load_model, weights_size_mb

SHIPPED = sorted(WEIGHTS_DIR.glob("*.safetensors"))
MAX_WEIGHTS_MB = 60  # the budget the vessel-trees issue sets for weights/


def test_weights_fit_the_budget():
    assert weights_size_mb() <= MAX_WEIGHTS_MB


@pytest.mark.skipif(not SHIPPED, reason="no shipped weights in weights/")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_model_loads_and_generates(path: Path):
    model = load_model(path)
    cfg = model.net_cfg
    assert path.stem in (WEIGHTS_DIR / "README.md").read_text(), "the model card does not describe this file"
    if cfg.role == "segment":  # vessels of the embedded photograph: darker than the background, mostly found
        from retree_core.data import embedded_example
        from retree_core.segmentation import load_learned_segmenter

        image, truth, fov = embedded_example()
        segmenter = load_learned_segmenter(str(path))
        found = segmenter(image, fov) > segmenter.threshold
        assert 0.3 < (found & truth).sum() / truth.sum() and found[truth].mean() > found[fov & ~truth].mean() + 0.2
        return
    if cfg.role == "sr":  # the embedded photograph (another camera) shrunk and brought back: closer than bicubic
        import cv2

        from retree_core.data import embedded_example
        from retree_core.superres import psnr, upscale

        image, vessels, _ = embedded_example()
        size, small_px = cfg.image_size, cfg.image_size // cfg.sr_scale
        target = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(vessels.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
        small = cv2.resize(target, (small_px, small_px), interpolation=cv2.INTER_AREA)
        big = upscale(model, small, mask)
        bicubic = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        assert big.shape == target.shape and psnr(big, target) > psnr(bicubic, target)
        return
    if cfg.role == "treesr":  # the embedded photograph's vessels made into stage 1's target: redrawn closer to
        from retree_core.data import embedded_example, mask_at  # them than the target's positive part enlarged
        from retree_core.pipeline import vessel_masks
        from retree_core.tree_ops import soft_trees
        from retree_core.tree_sr import upscale_trees

        truth = mask_at(embedded_example()[1], cfg.image_size)
        small = torch.from_numpy(mask_at(truth, cfg.sr_input_px)).float()[None, None] * 2 - 1
        soft = soft_trees(small, 1.5)

        def dice(trees):
            return 2 * (trees[0] & truth).sum() / (trees[0].sum() + truth.sum())
        assert dice(upscale_trees(model, soft)) > dice(vessel_masks(soft, cfg.image_size)) + 0.02
        return
    mask = procedural_tree(cfg.image_size, seed=0) if cfg.conditional else None
    out = generate(model, mask, [0], steps=2, guidance=model.guidance)
    assert out.shape == (1, cfg.image_channels, cfg.image_size, cfg.image_size)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0 + 1e-6
    assert float(out.std()) > 0.01  # an image, not a constant
    if cfg.conditional:  # the mask matters: another mask gives another image from the same noise
        other = generate(model, np.zeros_like(mask), [0], steps=2, guidance=model.guidance)
        assert not torch.equal(out, other)


@pytest.mark.skipif(not (WEIGHTS_DIR / "vessel.safetensors").exists(), reason="no shipped vessel model")
def test_shipped_vessel_model_draws_trees_the_filter_keeps():
    """Stage 1 as generate --num runs it (DPM-Solver++, 20 steps): of seeds 0-7, some trees pass the
    plausibility filter (the model card: most draws), and they are not all the same tree."""
    from retree_core.pipeline import vessel_masks
    from retree_core.plausibility import DEFAULT_THRESHOLD, plausibility

    model = load_model("vessel", role="vessel")
    trees = vessel_masks(generate(model, None, list(range(8)), steps=20))
    kept = [tree for tree in trees if plausibility(tree).value >= DEFAULT_THRESHOLD]
    assert len(kept) >= 2 and not np.array_equal(kept[0], kept[1])


@pytest.mark.skipif(not (WEIGHTS_DIR / "sr.safetensors").exists(), reason="no shipped sr model")
def test_new_models_default_to_a_size_a_shipped_sr_takes():
    """`train` and the Train tab start at TrainConfig's size: a fundus model of that size is super-resolved."""
    from retree_core.config import TrainConfig
    from retree_core.superres import shipped_path

    assert shipped_path("sr", TrainConfig().image_size) is not None
