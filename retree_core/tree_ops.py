"""Vessel trees as bool masks: made soft as the stage-1 model learns them, cut from its soft output, and
one-click changes (remove the branch at a point, add tortuosity)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import Tensor
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold
from skimage.morphology import remove_small_objects, skeletonize

REACH_PX = 12  # a click this close to a vessel's centre line picks it
MEND_LEVEL = -0.5  # soft-output level down to which a faint ridge joins two pieces (soft trees: 0.8 px outside)
SPECK_SHARE = 6 / 128 ** 2  # pieces smaller than this share of the picture (6 px at 128 px) are dropped


def soft_trees(masks: Tensor, px: float) -> Tensor:
    """Masks (B, 1, H, W) in [-1, 1] as smooth trees: tanh(signed distance to the vessel edge / px), above 0
    exactly on the vessels, so the tree is the positive part as for a binary mask. Vessels a pixel wide
    at 128 px become ridges with a few pixels of slope that the coarse levels of the network can see."""
    out = []
    for m in (masks[:, 0] > 0).cpu().numpy().astype(np.uint8):
        inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)  # to the nearest background pixel
        outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)  # to the nearest vessel pixel
        out.append(np.tanh(np.where(m > 0, inside - 0.5, 0.5 - outside) / px))
    return torch.from_numpy(np.stack(out)[:, None]).to(masks)


def cut_tree(soft: np.ndarray, size_px: int | None = None, refine: bool = True) -> np.ndarray:
    """A bool tree from a stage-1 model's soft output (H, W) in [-1, 1]: its positive part, at `size_px`
    from the output resized (bicubic) first, so enlarged trees have smooth edges. With `refine`, breaks in a
    vessel are mended (the centre line of each faint ridge above MEND_LEVEL joining vessel pixels, one model
    pixel wide) and specks dropped: the model draws thin vessels in dashes at 128 px."""
    soft = np.asarray(soft, np.float32)
    scale = 1.0 if size_px is None else size_px / soft.shape[-1]
    if scale != 1.0:
        soft = cv2.resize(soft, (size_px, size_px), interpolation=cv2.INTER_CUBIC)
    tree = soft > 0
    if not refine or not tree.any():
        return tree
    bridges = skeletonize(apply_hysteresis_threshold(soft, MEND_LEVEL, 0)) & ~tree
    if scale > 1.5:
        bridges = cv2.dilate(bridges.astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (round(scale),) * 2)).astype(bool)
    return drop_specks(tree | bridges)


def drop_specks(tree: np.ndarray, share: float = SPECK_SHARE) -> np.ndarray:
    """The tree without its pieces (8-connected) smaller than `share` of the picture."""
    return remove_small_objects(np.asarray(tree, bool), max_size=math.ceil(share * tree.size) - 1, connectivity=2)


def branch_at(tree: np.ndarray, x: float, y: float, reach_px: float = REACH_PX) -> np.ndarray:
    """The vessel pixels of the branch nearest (x, y): the centre-line segment between two junctions (or
    a junction and an end) closest to the point, widened to the vessel's width. Empty when no centre line
    is within `reach_px`."""
    tree = np.asarray(tree, bool)
    skeleton = skeletonize(tree)
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant") - 1
    junctions = skeleton & (neighbours >= 3)
    segments = skeleton & ~ndimage.binary_dilation(junctions, np.ones((3, 3), bool))
    labels, count = ndimage.label(segments, np.ones((3, 3), int))
    if count == 0:
        return np.zeros_like(tree)
    ys, xs = np.nonzero(segments)
    distance = np.hypot(xs - x, ys - y)
    nearest = int(np.argmin(distance))
    if distance[nearest] > reach_px:
        return np.zeros_like(tree)
    segment = labels == labels[ys[nearest], xs[nearest]]
    half_width = float(ndimage.distance_transform_edt(tree)[segment].max())
    return tree & (ndimage.distance_transform_edt(~segment) <= half_width + 1.5)


def remove_branch(tree: np.ndarray, x: float, y: float, reach_px: float = REACH_PX) -> np.ndarray:
    """The tree without the branch at (x, y), and without the scraps that branch leaves (pieces touching it
    no bigger than a few vessel widths squared: centre-line spurs at its ends)."""
    tree = np.asarray(tree, bool)
    branch = branch_at(tree, x, y, reach_px)
    if not branch.any():
        return tree.copy()
    rest = tree & ~branch
    width = 2 * float(ndimage.distance_transform_edt(tree)[branch].max()) + 1
    labels, _ = ndimage.label(rest, np.ones((3, 3), int))
    touching = np.unique(labels[ndimage.binary_dilation(branch, np.ones((3, 3), bool)) & rest])
    sizes = np.bincount(labels.ravel())
    scraps = [label for label in touching if label and sizes[label] <= 4 * width ** 2]
    return rest & ~np.isin(labels, scraps)


def add_tortuosity(tree: np.ndarray, amount_px: float, seed: int = 0, wavelength_px: float | None = None) -> np.ndarray:
    """The tree bent by a smooth random displacement of about `amount_px` (standard deviation), varying over
    `wavelength_px` (default: a tenth of the tree's size): vessels wind more, the tree's layout stays."""
    tree = np.asarray(tree, bool)
    if amount_px <= 0:
        return tree.copy()
    size = max(tree.shape)
    sigma = (wavelength_px or size / 10) / 2
    rng = np.random.default_rng(seed)
    shifts = [ndimage.gaussian_filter(rng.standard_normal(tree.shape), sigma) for _ in range(2)]
    shifts = [s * amount_px / (s.std() or 1.0) for s in shifts]
    yy, xx = np.mgrid[:tree.shape[0], :tree.shape[1]].astype(np.float32)
    bent = cv2.remap(tree.astype(np.float32), xx + shifts[0].astype(np.float32), yy + shifts[1].astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return bent >= 0.5


__all__ = ["MEND_LEVEL", "REACH_PX", "SPECK_SHARE", "add_tortuosity", "branch_at", "cut_tree", "drop_specks",
           "remove_branch", "soft_trees"]
