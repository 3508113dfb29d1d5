"""Mask fidelity: do the vessels in a generated fundus image follow the mask it was generated from?

The vessels are found by a learned segmenter when one is given (the shipped `segment` model), else by
the classical ridge filter (`data.segment_vessels_classical`: green channel, CLAHE, Sato filter), and
compared with the conditioning mask by Dice inside the image's field of view (the evaluation protocol's
"mask fidelity"). The overlay shows where they agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .data import estimate_fov, segment_vessels_classical
from .metrics import dice  # the one Dice of the project (1.0 when both masks are empty)

SEGMENTER_NAME = "classical ridge filter (Sato)"
MIN_ANALYSIS_PX = 128  # smaller images are enlarged first: the ridge filter needs a few px per vessel
AGREE_RGB = np.array((40, 200, 90), np.uint8)  # vessel in the mask and found in the image
MISSED_RGB = np.array((230, 50, 60), np.uint8)  # in the mask, not found
EXTRA_RGB = np.array((60, 140, 255), np.uint8)  # found, not in the mask


@dataclass
class Fidelity:
    """Vessels found in an image against its conditioning mask (all arrays at the analysis size)."""

    dice: float | None  # None when no field of view is found in the image
    found: np.ndarray  # bool: vessels found in the image
    mask: np.ndarray  # bool: the conditioning mask
    fov: np.ndarray  # bool: field of view the score is computed in
    overlay: np.ndarray  # uint8 RGB picture of agreement
    segmenter: str = SEGMENTER_NAME

    def summary(self) -> str:
        if self.dice is None:
            return "Mask fidelity: n/a (no field of view found in the image)"
        return f"Mask fidelity (Dice in the field of view, {self.segmenter}): {self.dice:.3f}"


def overlay_picture(image_rgb: np.ndarray, mask: np.ndarray, found: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """The image dimmed to grey, with agreement green, missed vessels red and extra vessels blue."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * 0.45
    out = np.repeat(grey[..., None], 3, 2).astype(np.uint8)
    out[~fov] = (out[~fov] * 0.5).astype(np.uint8)
    out[mask & found] = AGREE_RGB
    out[mask & ~found] = MISSED_RGB
    out[~mask & found] = EXTRA_RGB
    return out


def analysis_view(image_rgb: np.ndarray, *masks: np.ndarray) -> tuple[np.ndarray, ...]:
    """The image enlarged (cubic) to a square of at least MIN_ANALYSIS_PX, and bool masks brought (nearest)
    to the same size: a ridge filter needs a few pixels per vessel."""
    side_px = max(image_rgb.shape[0], MIN_ANALYSIS_PX)
    if image_rgb.shape[:2] != (side_px, side_px):
        image_rgb = cv2.resize(image_rgb, (side_px, side_px), interpolation=cv2.INTER_CUBIC)
    return (image_rgb, *[m if m.shape == (side_px, side_px) else
                         cv2.resize(m.astype(np.uint8), (side_px, side_px), interpolation=cv2.INTER_NEAREST).astype(bool)
                         for m in masks])


def measure_fidelity(image_rgb: np.ndarray, mask: np.ndarray, segmenter=None) -> Fidelity:
    """Segment `image_rgb` (uint8 HxWx3) and compare with `mask` (bool, any size) inside the FOV.
    `segmenter`: a learned one (segmentation.LearnedSegmenter), or None for the classical filter."""
    image_rgb, mask = analysis_view(np.ascontiguousarray(image_rgb[..., :3]), mask)
    fov = estimate_fov(image_rgb)
    if not fov.any():
        found = np.zeros_like(mask)
    elif segmenter is None:
        found = segment_vessels_classical(image_rgb, fov)
    else:
        found = segmenter(image_rgb, fov) > segmenter.threshold
    score = dice(found, mask, fov) if fov.any() else None
    name = SEGMENTER_NAME if segmenter is None else segmenter.name
    return Fidelity(score, found, mask, fov, overlay_picture(image_rgb, mask, found, fov), name)


__all__ = ["Fidelity", "SEGMENTER_NAME", "analysis_view", "dice", "overlay_picture", "measure_fidelity"]
