"""The camera's round aperture on generated photographs.

A fundus camera images the retina through a circular aperture: outside it the photograph is black,
and its rim is a clean circle. Young fundus models draw the retina's disc with a ragged rim. Finishing
a generated image with the aperture fits the circle the model drew (centre and area-equivalent radius
of its bright field of view) and blacks out everything beyond it with a soft edge, as a camera does.
The image inside the circle is left as generated; a pair's mask is cut to the same circle so that no
vessel is labelled where the photograph is black.
"""
from __future__ import annotations

import cv2
import numpy as np

from .data.embedded import estimate_fov

EDGE_FRACTION = 0.01  # the soft edge is this share of the diameter wide
MIN_FOV_SHARE = 0.3  # a bright field smaller than this share of the image is not trusted: centred disc


def fit_aperture(image_rgb: np.ndarray) -> np.ndarray:
    """Aperture weights (float32 HxW, 1 inside, 0 outside, soft at the rim) for one uint8 RGB image."""
    height_px, width_px = image_rgb.shape[:2]
    fov = estimate_fov(image_rgb)
    if fov.mean() >= MIN_FOV_SHARE:
        rows, cols = np.nonzero(fov)
        centre_y, centre_x = rows.mean(), cols.mean()
        radius = np.sqrt(fov.sum() / np.pi)
    else:
        centre_y, centre_x, radius = (height_px - 1) / 2, (width_px - 1) / 2, min(height_px, width_px) / 2
    yy, xx = np.mgrid[:height_px, :width_px]
    distance = np.hypot(yy - centre_y, xx - centre_x)
    edge_px = max(EDGE_FRACTION * 2 * radius, 1.0)
    return np.clip((radius - distance) / edge_px + 0.5, 0.0, 1.0).astype(np.float32)


def apply_aperture(image_rgb: np.ndarray, mask: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """(image, mask) finished with the aperture fitted to the image: the image blacked out beyond it,
    the mask (bool, any size; None: none) cut to it. Batches (B, H, W, 3) with masks (B, h, w) alike."""
    if image_rgb.ndim == 4:
        masks = [None] * len(image_rgb) if mask is None else mask
        images, cut = zip(*(apply_aperture(img, m) for img, m in zip(image_rgb, masks)))
        return np.stack(images), None if mask is None else np.stack(cut)
    weights = fit_aperture(image_rgb)
    finished = np.round(image_rgb.astype(np.float32) * weights[..., None]).astype(np.uint8)
    if mask is None:
        return finished, None
    inside = (weights >= 0.5).astype(np.uint8)
    if inside.shape != mask.shape:
        inside = cv2.resize(inside, mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
    return finished, mask & (inside > 0)
