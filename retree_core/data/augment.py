"""Joint augmentation of (image, vessel mask, FOV): one geometric warp for all three, colour on the image.

The geometry is a single affine map from a square around the field of view to the output square, so
the mask stays pixel-aligned with the photograph and non-square images (DRIVE 565x584, CHASE_DB1
999x960) need no separate padding step. All randomness comes from the caller's generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .embedded import estimate_fov
from .imageio import MASK_COVERAGE, to_unit

MAX_WARP_SHRINK = 2.0  # larger reductions are area-resampled first: linear warping would alias


@dataclass
class AugmentConfig:
    """Random transforms for training; `enabled=False` gives the plain resize used for validation."""

    hflip: bool = True
    vflip: bool = False
    rotate_deg: float = 15.0  # rotation drawn uniformly in +-rotate_deg
    scale_range: tuple[float, float] = (0.9, 1.15)  # zoom, drawn log-uniformly; >1 crops the FOV rim
    color_jitter: float = 0.1  # relative strength of brightness, contrast, saturation and hue changes
    # photometric extras, off by default (see `photometric`): for segmenters, e.g. on synthetic pairs
    vessel_fade: float = 0.0  # up to this share of the annotated vessels' contrast is blended away
    blur_sigma: float = 0.0  # Gaussian blur of a sigma up to this (pixels of a 512 px view)
    noise_std: float = 0.0  # Gaussian noise of a std up to this (grey levels)
    vessel_reflex: float = 0.0  # a light stripe along wide vessels' centre lines, up to this share of their contrast
    illumination: float = 0.0  # smooth brightness field: log-gain of a std up to this
    enabled: bool = True

    @property
    def extras_set(self) -> bool:
        """Any photometric extra asked for (whether or not augmentation is enabled)."""
        strengths = (self.vessel_fade, self.blur_sigma, self.noise_std, self.vessel_reflex, self.illumination)
        return any(s > 0 for s in strengths)

    @property
    def photometric_on(self) -> bool:
        return self.enabled and self.extras_set


def fov_square(fov: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, side) in pixels of the square that holds the FOV's bounding box."""
    height_px, width_px = fov.shape
    rows, cols = np.flatnonzero(fov.any(axis=1)), np.flatnonzero(fov.any(axis=0))
    if len(rows) == 0:
        return (width_px - 1) / 2, (height_px - 1) / 2, float(max(height_px, width_px))
    side_px = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    return (cols[0] + cols[-1]) / 2, (rows[0] + rows[-1]) / 2, float(side_px)


def _warp_matrix(centre_xy: tuple[float, float], side_px: float, size_px: int, angle_deg: float,
                 zoom: float, hflip: bool, vflip: bool) -> np.ndarray:
    """2x3 affine map: square (centre, side) in the source -> size_px output, rotated/zoomed/flipped."""
    angle_rad = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(angle_rad), -np.sin(angle_rad)], [np.sin(angle_rad), np.cos(angle_rad)]])
    flips = np.diag([-1.0 if hflip else 1.0, -1.0 if vflip else 1.0])
    linear = zoom * size_px / side_px * rotation @ flips
    out_centre = np.full(2, (size_px - 1) / 2)
    offset = out_centre - linear @ np.asarray(centre_xy, dtype=np.float64)
    return np.hstack([linear, offset[:, None]])


def _shrink(planes: np.ndarray, factor: float) -> np.ndarray:
    """Area-resample an HxWxC float array by `factor` (< 1)."""
    height_px, width_px = planes.shape[:2]
    size = (max(1, round(width_px * factor)), max(1, round(height_px * factor)))
    return cv2.resize(planes, size, interpolation=cv2.INTER_AREA)


def color_jitter(image: np.ndarray, fov: np.ndarray, strength: float, rng: np.random.Generator
                 ) -> np.ndarray:
    """Brightness, contrast, saturation and a slight hue turn, applied inside the FOV only.

    Always draws four numbers, so the generator advances the same way whatever `strength` is.
    """
    brightness, contrast, saturation, hue = rng.uniform(-1.0, 1.0, size=4) * strength
    if strength <= 0 or not fov.any():
        return image
    rgb = image.astype(np.float32) * (1.0 + brightness)
    mean = rgb[fov].mean(axis=0)
    rgb = (rgb - mean) * (1.0 + contrast) + mean
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = (rgb - grey) * (1.0 + saturation) + grey
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(hue * 18)) % 180).astype(np.uint8)  # 180 = turn
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.where(fov[..., None], rgb, image)


def _background(image: np.ndarray, scale: float) -> np.ndarray:
    """The photograph without its vessels: a grey closing wider than the widest vessel (float32)."""
    side = 2 * round(8 * scale) + 1  # main vessels are up to about 12 px wide in a 512 px view
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    return cv2.morphologyEx(image, cv2.MORPH_CLOSE, kernel).astype(np.float32)


def _reflex_stripe(mask: np.ndarray, scale: float) -> np.ndarray:
    """Weights (0-1) of a narrow stripe along the centre line of the vessels at least 4 px wide (512 px view)."""
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    ridge = (depth >= 2.0 * scale) & (depth >= cv2.dilate(depth, np.ones((3, 3), np.uint8)) - 0.5)
    stripe = cv2.GaussianBlur(ridge.astype(np.float32), (0, 0), max(0.6 * scale, 0.5))
    return np.clip(stripe / max(float(stripe.max()), 1e-6), 0, 1) * mask


def _gain_field(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth standard-normal field (a random node per 256 px of a 512 px view, cubic in between)."""
    nodes = [max(2, round(side / (256 * scale)) + 2) for side in shape]
    field = cv2.resize(rng.standard_normal(nodes).astype(np.float32), shape[::-1], interpolation=cv2.INTER_CUBIC)
    return np.clip(field, -2.5, 2.5)


def photometric(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, view_px: int,
                rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Vessel fade and reflex, uneven illumination, blur and noise of a uint8 image (a view of `view_px`,
    or a crop of one), inside `fov`.

    The fade blends the annotated vessels (a soft band around the mask) toward the background, estimated
    by a grey closing wider than the widest vessel, by a share drawn up to `cfg.vessel_fade`: the same
    tree drawn fainter, as real thin vessels are. The reflex does the same on a narrow stripe along the
    wide vessels' centre lines (the light reflex of real arteries, which reads as two thin vessels to a
    model that never saw it). The illumination multiplies by a smooth random gain (real photographs are
    darker towards the rim). Strengths are drawn per image; the draws of the first three come first, so
    turning the later ones on leaves the earlier ones' randomness unchanged.
    """
    fade, sigma, noise = rng.uniform(0.0, 1.0, size=3) * (cfg.vessel_fade, cfg.blur_sigma, cfg.noise_std)
    noise_px = rng.normal(0.0, noise, size=image.shape).astype(np.float32) if noise > 0 else 0.0
    scale = view_px / 512
    out = image.astype(np.float32)
    if cfg.vessel_reflex > 0 or cfg.illumination > 0:
        reflex, light = rng.uniform(0.0, 1.0, size=2) * (cfg.vessel_reflex, cfg.illumination)
        gain = np.exp(light * _gain_field(image.shape[:2], scale, rng))[..., None] if light > 0 else 1.0
    else:
        reflex, gain = 0.0, 1.0
    if (fade > 0 or reflex > 0) and mask.any():
        background = _background(image, scale)
        band = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0 * scale, 0.5))
        weight = fade * np.clip(np.maximum(band * 2, mask), 0, 1)
        if reflex > 0:
            weight = weight + (1 - weight) * reflex * _reflex_stripe(mask, scale)
        out = out + weight[..., None] * (background - out)
    out = out * gain
    if sigma * scale > 0.1:  # normalised by the blurred FOV: the black beyond it does not bleed in
        inside = fov.astype(np.float32)
        weight = cv2.GaussianBlur(inside, (0, 0), sigma * scale)[..., None]
        out = cv2.GaussianBlur(out * inside[..., None], (0, 0), sigma * scale) / np.maximum(weight, 1e-3)
    out = np.clip(np.rint(out + noise_px), 0, 255).astype(np.uint8)
    return np.where(fov[..., None], out, image)


def augment(image: np.ndarray, mask: np.ndarray, fov: np.ndarray | None, size_px: int,
            rng: np.random.Generator | None = None, cfg: AugmentConfig | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 SxSx3, mask bool SxS, fov bool SxS) with S = size_px; a pure function of the inputs.

    `mask` and `fov` may be bool or soft coverage (uint8 0-255 or float 0-1, e.g. after area resizing);
    they are warped linearly and cut (the mask at MASK_COVERAGE, the FOV at 0.5); a missing FOV is estimated from the image. Without
    augmentation (cfg None/disabled, or no rng) the square around the FOV is only resized.
    """
    if fov is None:
        fov = estimate_fov(image)
    active = cfg is not None and cfg.enabled and rng is not None
    if active:
        flip_h, flip_v = rng.random(2) < 0.5
        angle_deg = rng.uniform(-1.0, 1.0) * cfg.rotate_deg
        low, high = cfg.scale_range
        zoom = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        hflip, vflip = cfg.hflip and flip_h, cfg.vflip and flip_v
    else:
        angle_deg, zoom, hflip, vflip = 0.0, 1.0, False, False

    planes = np.dstack([image.astype(np.float32), to_unit(np.asarray(mask)) * 255.0,
                        to_unit(np.asarray(fov)) * 255.0])
    centre_x, centre_y, side_px = fov_square(planes[..., 4] >= 127.5)
    shrink = MAX_WARP_SHRINK * size_px / side_px
    if shrink < 1.0:
        planes = _shrink(planes, shrink)
        centre_x, centre_y = (centre_x + 0.5) * shrink - 0.5, (centre_y + 0.5) * shrink - 0.5
        side_px *= shrink
    matrix = _warp_matrix((centre_x, centre_y), side_px, size_px, angle_deg, zoom, hflip, vflip)
    warped = cv2.warpAffine(planes, matrix, (size_px, size_px), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out_image = np.clip(np.rint(warped[..., :3]), 0, 255).astype(np.uint8)
    out_mask, out_fov = warped[..., 3] >= 255.0 * MASK_COVERAGE, warped[..., 4] >= 127.5
    if active:
        out_image = color_jitter(out_image, out_fov, cfg.color_jitter, rng)
    return out_image, out_mask, out_fov
