"""Conversions between model tensors ([-1, 1], NCHW) and uint8 pictures, and image grids."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import Tensor


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) or (C, H, W) in [-1, 1] -> uint8 (B, H, W, 3) or (H, W, 3); 1 channel becomes grey."""
    single = x.ndim == 3
    x = x[None] if single else x
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).numpy()
    return arr[0] if single else arr


def from_uint8(images: np.ndarray) -> Tensor:
    """uint8 (H, W, C) or (B, H, W, C) -> float (C, H, W) or (B, C, H, W) in [-1, 1]: the inverse of to_uint8."""
    arr = np.asarray(images)
    return torch.from_numpy(np.moveaxis(arr, -1, -3).astype(np.float32) / 127.5 - 1.0)


def mask_rgb(mask: np.ndarray) -> np.ndarray:
    """bool (..., H, W) -> uint8 (..., H, W, 3), vessels white on black: how masks are saved and shown."""
    return np.repeat(np.asarray(mask, dtype=bool)[..., None] * np.uint8(255), 3, axis=-1)


def mask_to_tensor(mask: np.ndarray) -> Tensor:
    """bool (H, W) or (B, H, W) -> float (B, 1, H, W), vessel +1, background -1."""
    m = torch.from_numpy(np.array(mask, dtype=bool))  # a copy: read-only arrays are fine
    m = m[None] if m.ndim == 2 else m
    return m[:, None].float() * 2 - 1


def grid(rows: Sequence[np.ndarray], pad_px: int = 2) -> np.ndarray:
    """Tile equally sized uint8 images (each row a (N, H, W, 3) array) into one picture."""
    rows = [np.asarray(r) for r in rows]
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    out = np.full((len(rows) * (h + pad_px) + pad_px, n * (w + pad_px) + pad_px, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad_px + i * (h + pad_px), pad_px + j * (w + pad_px)
            out[y:y + h, x:x + w] = img
    return out


SETTINGS_KEY = "retree"  # the PNG text chunk that holds the generation settings of an image (JSON)


def _png_info(settings: dict | None) -> PngInfo | None:
    if settings is None:
        return None
    info = PngInfo()
    info.add_text(SETTINGS_KEY, json.dumps(settings, sort_keys=True))
    return info


def save_png(path: str | Path, image: np.ndarray, settings: dict | None = None) -> Path:
    """Write a PNG; `settings` (what made it) go into its text chunk SETTINGS_KEY (read_settings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, pnginfo=_png_info(settings))
    return path


def png_bytes(image: np.ndarray, settings: dict | None = None) -> bytes:
    """`save_png` into memory (for zips)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=_png_info(settings))
    return buffer.getvalue()


def read_settings(path: str | Path) -> dict | None:
    """The generation settings stored in a PNG by save_png, or None."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(SETTINGS_KEY)
    return json.loads(text) if text else None
