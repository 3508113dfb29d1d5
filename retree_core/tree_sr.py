"""Stage 1's super-resolution: a network of role `treesr` that turns the vessel model's soft 128 px tree
into a tree at sr_scale x that size, with vessels as thin as annotated ones (the positive part of the soft
tree, enlarged, draws every vessel at least one model pixel wide). It is trained on the annotations alone:
each annotation made into the vessel model's training target (area-shrunk, `soft_trees`), noised, is the
input, the annotation the target (`train --mode treesr`)."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from . import compute
from .data.imageio import MASK_COVERAGE
from .segmentation import segment_logits
from .superres import bicubic, choose_sr, downsample, noisy_input
from .tree_ops import drop_specks, soft_trees
from .weights import LoadedModel


def tree_sr_input(masks: torch.Tensor, scale: int, soft_px: float, items: Sequence[tuple[int, int]] = (),
                  max_noise: float = 0.0) -> torch.Tensor:
    """The training input for annotations (B, 1, H, W) in [-1, 1]: the vessel model's target at 1/scale
    (coverage >= MASK_COVERAGE, soft with `soft_px`, else binary), noised per item, enlarged (bicubic)."""
    small = (downsample((masks > 0).float(), scale) >= MASK_COVERAGE).float() * 2 - 1
    small = soft_trees(small, soft_px) if soft_px else small
    return bicubic(noisy_input(small, items, max_noise), masks.shape[-2:])


@compute.on_compute_thread
@torch.inference_mode()
def upscale_trees(model: LoadedModel, soft: torch.Tensor, size_px: int | None = None,
                  threshold: float = 0.5) -> np.ndarray:
    """Bool trees (B, S, S) from the vessel model's soft output (B, 1, s, s) in [-1, 1], S = `size_px`
    (default: the model's sr_scale x s; a multiple of the network's stride): vessel probability above
    `threshold`, specks dropped."""
    cfg = model.net_cfg
    if cfg.role != "treesr":
        raise ValueError(f"enlarging trees needs a treesr model, not a {cfg.role!r} one")
    size_px = size_px or soft.shape[-1] * cfg.sr_scale
    if size_px % cfg.stride:
        raise ValueError(f"trees of {size_px} px: this treesr model needs a multiple of {cfg.stride}")
    device = next(model.net.parameters()).device
    base = bicubic(soft.float().to(device), (size_px, size_px))
    prob = torch.sigmoid(segment_logits(model.net, base).float())[:, 0].cpu().numpy()
    return np.stack([drop_specks(p > threshold) for p in prob])


def with_tree_sr(vessel: LoadedModel, choice: str | None = "auto", device: str = "cpu") -> LoadedModel:
    """The vessel model with the treesr model that enlarges its trees: "auto" the shipped `treesr` where it
    takes the vessel model's size, "none" none, or a name/path (which must take it)."""
    return replace(vessel, tree_sr=choose_sr(choice, vessel.net_cfg.image_size, device, role="treesr"))


__all__ = ["tree_sr_input", "upscale_trees", "with_tree_sr"]
