"""Thin vessels grown onto a vessel tree. The stage-1 model learns 128 px trees and cannot draw vessels under
half a model pixel, so its trees hold about half the centre line of a real annotation; the missing part is
the thin vessels. `add_twigs` sprouts them from the tree's vessels into the free space beside them: each a
smoothly curving walk (Ornstein-Uhlenbeck curvature) that leaves its parent at an angle, heads downstream
(away from the disc, where the widest vessels meet), keeps clear of other vessels, narrows, and now and then
branches. Drawn as the procedural generator draws (anti-aliased, supersampled)."""
from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from .data.procedural import REFERENCE_PX, Segment, fov_disc, rasterise

SPACING_PX = 28.0  # mean centre line between sprouts (px at 512)
WIDTH_PX = (1.8, 3.0)  # a twig's width where it leaves its parent (px at 512)
LENGTH_PX = (30.0, 150.0)  # a twig's length budget (px at 512)
CLEARANCE_PX = 7.0  # twigs end this close to other vessels (px at 512)
STEP_PX = 2.0
FOV_MARGIN = 0.03  # the trees' round field of view (procedural.fov_disc)
TWIGS_BY_DEFAULT = True  # for stage-1 trees in generate --num and the app; why: docs/experiments.md


def _orientation(tree: np.ndarray, sigma: float) -> np.ndarray:
    """Per pixel, the angle of the vessel direction (structure tensor of the smoothed tree)."""
    smooth = cv2.GaussianBlur(tree.astype(np.float32), (0, 0), sigma / 2)
    gx, gy = cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
    jxx, jxy, jyy = (cv2.GaussianBlur(a, (0, 0), sigma) for a in (gx * gx, gx * gy, gy * gy))
    return 0.5 * np.arctan2(2 * jxy, jxx - jyy) + math.pi / 2  # the normal's angle turned to the vessel's


class _Twigs:
    """The walk: free space from the tree's distance map and an occupancy raster of twigs drawn so far."""

    def __init__(self, tree: np.ndarray, rng: np.random.Generator):
        self.size = tree.shape[0]
        self.k = self.size / REFERENCE_PX
        self.rng = rng
        self.fov = fov_disc(self.size, FOV_MARGIN)
        self.free = ndimage.distance_transform_edt(~tree)
        self.taken = np.zeros(tree.shape, np.uint8)
        self.segments: list[Segment] = []

    def pixel(self, x: float, y: float) -> tuple[int, int] | None:
        """The (row, col) of (x, y), None outside the field of view."""
        row, col = int(round(y)), int(round(x))
        return (row, col) if 0 <= row < self.size and 0 <= col < self.size and self.fov[row, col] else None

    def inside(self, x: float, y: float) -> bool:
        return self.pixel(x, y) is not None

    def clear(self, x: float, y: float) -> float:
        """Distance to the nearest vessel or twig at (x, y) (0 outside the field of view)."""
        at = self.pixel(x, y)
        return 0.0 if at is None or self.taken[at] else float(self.free[at])

    def grow(self, x: float, y: float, heading: float, width: float, budget: float, depth: int) -> None:
        """Walk one twig from (x, y), record it, then grow its side twigs."""
        k, rng = self.k, self.rng
        step, clearance = STEP_PX * k, CLEARANCE_PX * k
        rho = math.exp(-step / (25 * k))
        curvature, travelled = 0.0, 0.0
        points, sides = [(x, y)], []
        next_side = rng.exponential(60 * k)
        leave = self.clear(x, y) + clearance + 2 * width * k  # travelled before other vessels may stop it
        while travelled < budget:
            curvature = rho * curvature + math.sqrt(1 - rho * rho) * rng.normal(0.0, 0.025)
            ahead = [self.clear(x + 3 * clearance * math.cos(heading + d), y + 3 * clearance * math.sin(heading + d))
                     for d in (-0.4, 0.4)]
            heading += curvature * step / k + 0.02 * np.sign(ahead[1] - ahead[0])  # drift to the freer side
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
            travelled += step
            if not self.inside(x, y):
                break
            if travelled > leave and self.clear(x + clearance * math.cos(heading),
                                                      y + clearance * math.sin(heading)) < clearance:
                break
            points.append((x, y))
            if travelled > next_side and depth < 2:
                sides.append((x, y, heading + rng.choice((-1, 1)) * rng.uniform(0.6, 1.1), 0.8 * width,
                              0.6 * (budget - travelled)))
                next_side = travelled + rng.exponential(60 * k)
        if travelled < 4 * clearance:
            return
        pts = np.asarray(points)
        half = len(pts) // 2  # narrowing: the far half a little thinner
        for run, w in ((pts[:half + 1], width), (pts[half:], max(0.8 * width, WIDTH_PX[0]))):
            self.segments.append(Segment((run - (self.size - 1) / 2) / (self.size * (0.5 - FOV_MARGIN)), w, 3))
        cv2.polylines(self.taken, [np.round(pts).astype(np.int32)], False, 1, thickness=max(1, int(clearance)))
        for side in sides:
            self.grow(*side, depth + 1)


def add_twigs(tree: np.ndarray, seed: int = 0, spacing_px: float = SPACING_PX) -> np.ndarray:
    """The bool tree (S, S) with thin vessels sprouted from its vessels into free space, one per
    `spacing_px` of centre line on average (px at 512; fewer where there is no room). Deterministic per seed."""
    tree = np.asarray(tree, bool)
    if tree.ndim != 2 or tree.shape[0] != tree.shape[1]:
        raise ValueError(f"twigs grow on a square tree, not one of shape {tree.shape}")
    if not spacing_px > 0:
        raise ValueError(f"twig spacing must be a positive length in px, got {spacing_px}")
    if not tree.any():
        return tree.copy()
    rng = np.random.default_rng(seed)
    twigs = _Twigs(tree, rng)
    k = twigs.k
    skeleton = skeletonize(tree)
    width = 2 * ndimage.distance_transform_edt(tree) - 1
    angle = _orientation(tree, 3 * k)
    rows, cols = np.nonzero(skeleton)
    wide = width[rows, cols] >= np.percentile(width[rows, cols], 90)
    disc = np.array([cols[wide].mean(), rows[wide].mean()])  # where the widest vessels meet
    chosen = np.flatnonzero(rng.random(len(rows)) < k / spacing_px)
    for i in rng.permutation(chosen):
        x, y, a = float(cols[i]), float(rows[i]), float(angle[rows[i], cols[i]])
        along = np.array([math.cos(a), math.sin(a)])
        if along @ (np.array([x, y]) - disc) < 0:
            a += math.pi  # downstream
        side, reach = rng.choice((-1, 1)), float(width[rows[i], cols[i]]) / 2 + 12 * k  # beside the vessel
        probe = lambda s: twigs.clear(x + reach * math.cos(a + s * math.pi / 2),  # noqa: E731
                                      y + reach * math.sin(a + s * math.pi / 2))
        if probe(side) < probe(-side):
            side = -side
        if probe(side) < 8 * k:
            continue
        w = min(rng.uniform(*WIDTH_PX), 0.7 * max(float(width[rows[i], cols[i]]) / k, WIDTH_PX[0]))
        twigs.grow(x, y, a + side * rng.uniform(0.7, 1.3), w, rng.uniform(*LENGTH_PX) * k, 0)
    drawn = rasterise(twigs.segments, tree.shape[0], FOV_MARGIN)
    return tree | drawn


__all__ = ["TWIGS_BY_DEFAULT", "add_twigs"]
