"""The camera's round aperture on generated photographs.

A fundus camera images the retina through a circular aperture: outside it the photograph is black,
and its rim is a clean circle. Young fundus models draw the retina's disc with a ragged rim. Finishing
a generated image with the aperture fits the circle the model drew (centre and area-equivalent radius
of its bright field of view) and blacks out everything beyond it with a soft edge, as a camera does.
The image inside the circle is left as generated; a pair's mask is cut to the same circle so that no
vessel is labelled where the photograph is black. `field_of_view` gives back the disc the aperture lets
light through, its soft rim included, as a dataset's FOV mask marks it: a segmenter trained on the pairs
then learns that the rim is not a vessel.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

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


def field_of_view(finished_rgb: np.ndarray) -> np.ndarray:
    """The bool field of view (H, W) of a uint8 photograph finished by `apply_aperture`: its lit disc, the
    soft rim included, with the disc's circle (centre, area-equivalent radius) filling any black notch at
    the rim. Batches (B, H, W, 3) alike."""
    if finished_rgb.ndim == 4:
        return np.stack([field_of_view(image) for image in finished_rgb])
    labels, count = ndimage.label(ndimage.binary_fill_holes(finished_rgb.max(axis=-1) > 0))
    if count == 0:
        return np.zeros(finished_rgb.shape[:2], bool)
    lit = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    rows, cols = np.nonzero(lit)
    yy, xx = np.mgrid[:lit.shape[0], :lit.shape[1]]
    return lit | (np.hypot(yy - rows.mean(), xx - cols.mean()) <= np.sqrt(len(rows) / np.pi))
