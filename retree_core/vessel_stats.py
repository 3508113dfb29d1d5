"""Morphological statistics of a binary vessel map.

Used to check that procedural vessel trees look like real annotations in numbers, not only by eye:
how much of the field of view is vessel, how long and how branched the centre-line network is,
how fragmented it is, and how wide the vessels are.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

_EIGHT = np.ones((3, 3), dtype=bool)
STATS_SIZE_PX = 512  # masks are compared at this size, FOV-squared (see `to_fov_square`)


def to_fov_square(mask: np.ndarray, fov: np.ndarray, size_px: int = STATS_SIZE_PX, coverage: float = 0.5
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Crop the square around the FOV (padding where the FOV is clipped) and resize both to size_px.

    Puts masks of any resolution and framing on one scale, so pixel widths and counts compare:
    area-resampled, a vessel pixel is kept when at least `coverage` covered (FOV pixels: half).
    """
    rows, cols = np.nonzero(fov)
    centre_y, centre_x = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    half = max(rows.max() - rows.min(), cols.max() - cols.min()) / 2 + 1
    top, left = int(round(centre_y - half)), int(round(centre_x - half))
    side = int(round(2 * half))

    def crop(image: np.ndarray) -> np.ndarray:
        canvas = np.zeros((side, side), np.float32)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + side, image.shape[0]), min(left + side, image.shape[1])
        canvas[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
        return cv2.resize(canvas, (size_px, size_px), interpolation=cv2.INTER_AREA)

    fov_out = crop(fov.astype(np.float32)) >= 0.5
    return (crop(mask.astype(np.float32)) >= coverage) & fov_out, fov_out


def neighbour_count(skeleton: np.ndarray) -> np.ndarray:
    """Number of 8-connected skeleton neighbours of every pixel (0 off the skeleton)."""
    kernel = np.ones((3, 3), dtype=np.int32)
    kernel[1, 1] = 0
    counts = ndimage.convolve(skeleton.astype(np.int32), kernel, mode="constant")
    return np.where(skeleton, counts, 0)


def vessel_stats(mask: np.ndarray, fov: np.ndarray | None = None) -> dict[str, float]:
    """Summarise a vessel mask inside a field of view.

    Ratios: area_fraction (vessel / FOV pixels), skeleton_length_rel (skeleton pixels per FOV
    diameter, the diameter of the circle with the FOV's area), largest_component_fraction.
    Counts: branch_points (clusters of skeleton pixels with >= 3 neighbours), end_points (skeleton
    pixels with one neighbour), components (8-connected). Widths, in pixels, so compare them at one
    resolution: width_mean_px and width_p10/p50/p90_px, the local diameter 2*d - 1 read from the
    distance transform d on the skeleton, so that a one-pixel line measures 1 px.
    """
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    fov = np.ones_like(mask) if fov is None else np.asarray(fov).astype(bool)
    if fov.shape != mask.shape:
        raise ValueError(f"fov shape {fov.shape} differs from mask shape {mask.shape}")
    vessels = mask & fov
    fov_px = max(int(fov.sum()), 1)
    fov_diameter_px = 2.0 * np.sqrt(fov_px / np.pi)

    skeleton = skeletonize(vessels)
    neighbours = neighbour_count(skeleton)
    # adjacent junction pixels (a 4-way crossing, a fat fork) are one branch point
    _, branch_points = ndimage.label(neighbours >= 3, structure=_EIGHT)
    end_points = int(np.count_nonzero(neighbours == 1))

    labels, components = ndimage.label(vessels, structure=_EIGHT)
    vessel_px = int(vessels.sum())
    if components:
        sizes = np.bincount(labels.ravel())[1:]
        largest_fraction = float(sizes.max() / vessel_px)
    else:
        largest_fraction = 0.0

    if skeleton.any():
        distance = ndimage.distance_transform_edt(vessels)
        widths = 2.0 * distance[skeleton] - 1.0
        p10, p50, p90 = np.percentile(widths, [10, 50, 90])
        mean_width = float(widths.mean())
    else:
        p10 = p50 = p90 = mean_width = 0.0

    return {
        "area_fraction": vessel_px / fov_px,
        "skeleton_length_rel": float(skeleton.sum() / fov_diameter_px),
        "branch_points": int(branch_points),
        "end_points": end_points,
        "components": int(components),
        "largest_component_fraction": largest_fraction,
        "width_mean_px": mean_width,
        "width_p10_px": float(p10),
        "width_p50_px": float(p50),
        "width_p90_px": float(p90),
    }
