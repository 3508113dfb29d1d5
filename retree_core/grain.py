"""Camera grain: the fine texture of a photograph that super-resolution cannot draw.

The `sr` model is a regression (one pass, the residual over the bicubic enlargement), so it returns what the
small image implies on average and none of the photograph's unpredictable fine texture and sensor noise.
A grain profile is the power spectrum its output lacks against real photographs of a style (per channel and
radial frequency, above the generator's Nyquist frequency; channels correlated as the photographs' fine
residual); `add_grain` adds Gaussian noise of that spectrum. Measured by `measure` (bench/grain.py writes it
into an `sr` file); stored with the `sr` model, one profile per style.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BINS = 129  # radial frequency bins from 0 to 0.5 cycles per pixel
CROP_PX = 256  # the spectra are measured on this central crop (inside the field of view)
GRAIN_BY_DEFAULT = True  # for synthetic pairs (generate, the Synthesise tab) where the sr model has a profile


@dataclass(frozen=True)
class GrainProfile:
    """Power (grey levels squared per frequency bin) to add per channel (3, BINS), and the channels'
    correlation (3, 3)."""

    power: np.ndarray
    correlation: np.ndarray

    def __post_init__(self) -> None:
        power, corr = np.asarray(self.power, float), np.asarray(self.correlation, float)
        if (power.shape != (3, BINS) or corr.shape != (3, 3) or (power < 0).any() or not np.isfinite(power).all()
                or not np.isfinite(corr).all()):
            raise ValueError(f"a grain profile needs (3, {BINS}) non-negative powers and a 3x3 correlation")
        try:
            np.linalg.cholesky(corr)
        except np.linalg.LinAlgError:
            raise ValueError("a grain profile's correlation must be positive definite") from None
        object.__setattr__(self, "power", power)
        object.__setattr__(self, "correlation", corr)

    def to_dict(self) -> dict:
        return {"power": np.round(self.power, 4).tolist(), "correlation": np.round(self.correlation, 4).tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "GrainProfile":
        return cls(np.array(data["power"], float), np.array(data["correlation"], float))


def _frequency(h: int, w: int) -> np.ndarray:
    """Per FFT coefficient of an (h, w) image, its radial frequency in cycles per pixel."""
    return np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))


def radial_power(images: np.ndarray) -> np.ndarray:
    """Mean power spectrum of uint8 (B, H, W, 3) images' central crop, averaged over rings: (3, BINS)."""
    h, w = images.shape[1:3]
    crop = min(CROP_PX, h, w)
    top, left = (h - crop) // 2, (w - crop) // 2
    pixels = images[:, top:top + crop, left:left + crop].astype(np.float64)
    pixels -= pixels.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(pixels, axes=(1, 2))) ** 2).mean(0) / crop ** 2
    ring = np.minimum(np.rint(_frequency(crop, crop) * 2 * (BINS - 1)).astype(int), BINS - 1).ravel()
    counts = np.maximum(np.bincount(ring, minlength=BINS), 1)
    return np.stack([np.bincount(ring, power[..., c].ravel(), minlength=BINS) / counts for c in range(3)])


def measure(photographs: np.ndarray, restored: np.ndarray) -> GrainProfile:
    """The grain `restored` (the same photographs through the small size and the `sr` model) lacks: the
    power the photographs have above it, and the correlation of their fine residual's channels."""
    if photographs.shape != restored.shape or photographs.ndim != 4:
        raise ValueError("grain is measured on photographs and their restored copies of one shape (B, H, W, 3)")
    deficit = np.clip(radial_power(photographs) - radial_power(restored), 0, None)
    residual = photographs.astype(np.float32) - restored.astype(np.float32)
    fine = np.concatenate([(r - cv2.GaussianBlur(r, (0, 0), 1.0)).reshape(-1, 3) for r in residual])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(fine.T))  # a flat channel (grey photographs): uncorrelated
    np.fill_diagonal(corr, 1.0)
    return GrainProfile(deficit, 0.999 * corr + 0.001 * np.eye(3))  # identical channels stay factorable


def add_grain(images: np.ndarray, profile: GrainProfile, min_frequency: float, seed: int) -> np.ndarray:
    """uint8 (B, H, W, 3) images plus Gaussian noise of the profile's power above `min_frequency` (cycles per
    pixel; a half-cosine ramp over the octave below it), image i from seed + i."""
    images = np.asarray(images)
    h, w = images.shape[1:3]
    freq = _frequency(h, w)
    ramp = np.clip(freq / (min_frequency / 2) - 1, 0, 1) if min_frequency > 0 else np.ones_like(freq)
    ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    bins = np.clip(freq * 2 * (BINS - 1), 0, BINS - 1)
    amplitude = np.stack([ramp * np.sqrt(np.interp(bins, np.arange(BINS), power)) for power in profile.power], -1)
    mix = np.linalg.cholesky(profile.correlation).T  # one filter and one channel mix for the whole batch
    out = np.empty_like(images)
    for i, image in enumerate(images):
        white = np.random.default_rng(seed + i).standard_normal((h, w, 3)) @ mix
        noise = np.real(np.fft.ifft2(np.fft.fft2(white, axes=(0, 1)) * amplitude, axes=(0, 1)))
        out[i] = np.clip(image + noise, 0, 255).round()
    return out
