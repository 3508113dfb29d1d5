"""Reading fundus photographs and vessel masks from any common file format, with clear errors.

Everything that can go wrong with a data file raises `DataError` naming the file and the problem, so
that a bad file is reported before training starts rather than crashing it halfway.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import MAX_IMAGE_PIXELS as MAX_PIXELS  # larger declared sizes are refused (decompression bombs)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".bmp")
NEAR_BINARY_FRACTION = 0.95  # share of pixels near the extremes for a mask to count as binary
MIN_MASK_CONTRAST = 0.25  # below this grey-level spread a mask is one level (noise is not vessel)


# Coverage above which a resampled mask pixel counts as vessel. Below 0.5 on purpose: at 256 px
# a cut at 0.5 breaks DRIVE's thin vessels into hundreds of pieces; 0.3 keeps trees connected.
MASK_COVERAGE = 0.3


class DataError(ValueError):
    """A data file or folder cannot be used; the message names the file and the problem."""


def _open(path: str | Path) -> np.ndarray:
    """Decode the first frame of an image file into an array, palette applied, dtype and alpha kept."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width_px, height_px = im.size
                if width_px * height_px > MAX_PIXELS:
                    raise DataError(f"{path}: image too large ({width_px}x{height_px} declared, "
                                    f"limit {MAX_PIXELS / 1e6:.0f} MP)")
                im.seek(0)
                im.load()
                return pil_to_array(im)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large ({exc})") from None
    except UnidentifiedImageError:
        return _open_with_opencv(path)  # TIFF variants and other files Pillow cannot decode
    except MemoryError:
        raise
    except Exception as exc:  # truncated or corrupt data surfaces as many exception types
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None


def _open_with_opencv(path: Path) -> np.ndarray:
    """Fallback decoder for formats Pillow does not know; RGB order, dtype kept."""
    try:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # a declared size above OpenCV's pixel limit (see retree_core/__init__.py)
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise DataError(f"{path}: image too large (declares more than {MAX_PIXELS / 1e6:.0f} MP)") from None
        raise DataError(f"{path}: unreadable image (damaged)") from None
    if arr is None:
        raise DataError(f"{path}: unreadable image (not a recognised image format)")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise DataError(f"{path}: image too large ({arr.shape[1]}x{arr.shape[0]}, "
                        f"limit {MAX_PIXELS / 1e6:.0f} MP)")
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # BGR(A) -> RGB(A)
    return arr


def pil_to_array(im: Image.Image) -> np.ndarray:
    """Array of a PIL image: grey HxW, RGB HxWx3 or RGBA HxWx4; palettes resolved, 16 bit kept."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("PA", "LA"):
        im = im.convert("RGBA")
    elif im.mode not in ("1", "L", "RGB", "RGBA", "I", "F") and not im.mode.startswith("I;16"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ...
    arr = np.asarray(im)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def to_unit(arr: np.ndarray) -> np.ndarray:
    """Grey levels as float32 in [0, 1].

    bool and uint8 use their dtype range; wider types use the smallest of 1, 255 and 65535 that holds
    the data (a 16-bit file storing 0/255 is 8-bit data), signed data is stretched to its own range.
    """
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = np.nan_to_num(arr.astype(np.float32))
    low, high = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if low < 0:
        return (arr - low) / max(high - low, 1e-12)
    full_scale = next((s for s in (1.0, 255.0, 65535.0) if high <= s), high)
    return arr / full_scale


def _rescaled_uint8(arr: np.ndarray) -> np.ndarray:
    """Any numeric image array as uint8 (16-bit and float data rescaled)."""
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.rint(to_unit(arr) * 255.0), 0, 255).astype(np.uint8)


def _as_rgb(arr: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx2, HxWx3 or HxWx4 -> HxWx3 (alpha dropped)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D image array, got shape {arr.shape}")
    channels = arr.shape[2]
    if channels in (1, 2):
        return np.repeat(arr[..., :1], 3, axis=2)
    return arr[..., :3]


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a photograph as uint8 HxWx3 RGB, whatever its mode (grey, palette, RGBA, 16 bit, CMYK)."""
    return np.ascontiguousarray(_as_rgb(_rescaled_uint8(_open(path))))


def binarize_mask(arr: np.ndarray) -> np.ndarray:
    """Vessel mask (bool HxW) from an image array of any dtype and channel layout.

    Transparent drawings use their alpha channel when the colour carries no information. Two grey
    levels: the brighter one is vessel (safe for palette GIFs whose background is near-black, not 0).
    Near-binary images are cut at half the value range; anything else (soft maps) at Otsu's threshold.
    """
    arr = np.asarray(arr)
    if arr.dtype == bool and arr.ndim == 2:
        return arr.copy()
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        unit = to_unit(arr)
        colour, alpha = unit[..., : min(3, arr.shape[2])], None
        if arr.shape[2] in (2, 4):
            colour, alpha = unit[..., : arr.shape[2] - 1], unit[..., -1]
        grey = colour.mean(axis=2)
        if alpha is not None and alpha.min() < 1.0:
            uniform = float(np.ptp(colour)) < 1e-3
            grey = alpha if uniform else grey * alpha
    elif arr.ndim == 2:
        grey = to_unit(arr)
    else:
        raise DataError(f"mask array has unsupported shape {arr.shape}")
    if grey.size == 0:
        return np.zeros(grey.shape, dtype=bool)
    low, high = float(grey.min()), float(grey.max())
    middle = (low + high) / 2
    if high > low and np.all((grey == low) | (grey == high)):
        return grey > middle
    if high - low < MIN_MASK_CONTRAST:
        return grey >= 0.5
    near_binary = np.mean((grey <= low + 0.1 * (high - low)) | (grey >= high - 0.1 * (high - low)))
    if near_binary >= NEAR_BINARY_FRACTION:
        return grey > middle
    from skimage.filters import threshold_otsu

    return grey > threshold_otsu(grey)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a vessel or FOV mask file as bool HxW (see `binarize_mask` for the rules)."""
    return binarize_mask(_open(path))


def pad_to_square(arr: np.ndarray) -> np.ndarray:
    """Centre an array on a square zero canvas (side = its longer side)."""
    height_px, width_px = arr.shape[:2]
    side_px = max(height_px, width_px)
    top, left = (side_px - height_px) // 2, (side_px - width_px) // 2
    out = np.zeros((side_px, side_px) + arr.shape[2:], dtype=arr.dtype)
    out[top: top + height_px, left: left + width_px] = arr
    return out


def mask_at(mask: np.ndarray, size_px: int) -> np.ndarray:
    """A square bool mask at size_px: itself when it is that size already, else resized by prepare_mask."""
    return mask if mask.shape == (size_px, size_px) else prepare_mask(mask, size_px)


def prepare_mask(img: np.ndarray | Image.Image | str | Path, size_px: int, label: str | None = None) -> np.ndarray:
    """A user-supplied vessel mask as bool size_px x size_px, ready to condition a generator.

    Binarised, centred on a square, area-resampled and cut at MASK_COVERAGE. Masks that are all
    background or all foreground are refused: they cannot describe a vessel tree. Errors name `label`
    (default: the file, or "mask").
    """
    if isinstance(img, (str, Path)):
        label, mask = label or str(img), read_mask(img)
    else:
        label = label or "mask"
        mask = binarize_mask(pil_to_array(img) if isinstance(img, Image.Image) else np.asarray(img))
    if mask.size == 0:
        raise DataError(f"{label}: mask is empty (shape {mask.shape})")
    if not mask.any():
        raise DataError(f"{label}: mask has no vessel pixel (all background); "
                        "vessels should be bright on a dark background")
    if mask.all():
        raise DataError(f"{label}: mask is entirely foreground; "
                        "vessels should be bright on a dark background")
    square = pad_to_square(mask.astype(np.float32))
    shrinking = square.shape[0] > size_px
    resized = cv2.resize(square, (size_px, size_px),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    out = resized >= MASK_COVERAGE
    if not out.any():
        raise DataError(f"{label}: no vessel pixel is left after resizing to {size_px} px "
                        "(vessels too thin for this size)")
    return out
