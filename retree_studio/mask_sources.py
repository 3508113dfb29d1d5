"""Where a conditioning vessel mask comes from: a sketch canvas, an uploaded file, the procedural
generator or the stage-1 vessel model; and the pictures the app shows of it.

Every source ends as a bool mask; `mask_for_model` turns any of them into exactly what a model sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from retree_core.data import DataError, binarize_mask, mask_at, prepare_mask, read_mask
from retree_core.data.procedural import TreeParams, procedural_tree
from retree_core.images import mask_rgb
from retree_core.pipeline import dream_trees, generate, vessel_masks
from retree_core.twigs import add_twigs
from retree_core import plausibility as plaus  # the filter's threshold is read when used (tests lower it)
from retree_core.weights import LoadedModel

CANVAS_PX = 512  # side of the sketch canvas; masks loaded into it are drawn at this size
MAX_CANVAS_LAYERS = 8  # layers a canvas value may hold (the editor sends one)
MAX_CANVAS_PIXELS = 4096 * 4096  # pixels of one canvas part (the editor sends 512 x 512)


@dataclass(frozen=True)
class UploadLimits:
    """Refuse uploads before decoding them when they are too big to be a mask."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 16_000_000


def check_upload(path: str | Path, limits: UploadLimits = UploadLimits(), what: str = "a mask") -> None:
    """Raise DataError for a missing, oversized or (declared) huge image file, without decoding it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path.name}: the upload did not arrive; try again")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path.name}: the file is empty")
    if size > limits.max_bytes:
        raise DataError(f"{path.name}: {size / 2**20:.1f} MB is too large for {what} (limit "
                        f"{limits.max_bytes / 2**20:.0f} MB)")
    try:
        with Image.open(path) as im:
            width_px, height_px = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return  # not readable by Pillow: read_mask tries OpenCV and reports what is wrong
    if width_px * height_px > limits.max_pixels:
        raise DataError(f"{path.name}: {width_px}x{height_px} px is too large for {what} "
                        f"(limit {limits.max_pixels / 1e6:.0f} megapixels)")


def _check_not_uniform(mask: np.ndarray, source: str) -> None:
    if mask.size == 0 or not mask.any():
        raise DataError(f"{source} has no vessel in it: vessels are white (bright) on a black background")
    if mask.all():
        raise DataError(f"{source} is entirely white (or one flat light shade): vessels should be white on a "
                        "black background")


def mask_from_upload(path: str | Path, limits: UploadLimits = UploadLimits()) -> np.ndarray:
    """An uploaded mask file (any format, mode or bit depth) as bool HxW at its own size."""
    check_upload(path, limits)
    mask = read_mask(path)
    _check_not_uniform(mask, f"{Path(path).name}")
    return mask


def _picture(value, part: str) -> np.ndarray:
    """A canvas part as an image array (grey, grey + alpha, RGB or RGBA; numbers), else DataError."""
    arr = np.asarray(value)
    channels_ok = arr.ndim == 2 or (arr.ndim == 3 and 1 <= arr.shape[2] <= 4)
    if arr.dtype.kind not in "biuf" or not channels_ok or arr.size == 0:
        raise DataError(f"Cannot read the canvas: its {part} is not a picture "
                        f"({arr.dtype.name} array of shape {arr.shape})")
    if arr.ndim >= 2 and arr.shape[0] * arr.shape[1] > MAX_CANVAS_PIXELS:
        raise DataError(f"Cannot read the canvas: its {part} is {arr.shape[1]}x{arr.shape[0]} px, more than the "
                        f"{MAX_CANVAS_PIXELS:,} pixels a canvas part may have")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"Cannot read the canvas: its {part} holds NaN or infinite values")
    return arr


def editor_image(value: dict | np.ndarray | None) -> np.ndarray | None:
    """The picture in a sketch-canvas value ({"background", "layers", "composite"}), composited
    over black when the editor sent no composite; None when there is nothing."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return _picture(value, "value")
    if value.get("composite") is not None:
        return _picture(value["composite"], "composite")
    layers = list(value.get("layers") or [])
    if len(layers) > MAX_CANVAS_LAYERS:
        raise DataError(f"Cannot read the canvas: it has {len(layers)} layers, more than {MAX_CANVAS_LAYERS}")
    parts = [_picture(p, "layer") for p in [value.get("background"), *layers] if p is not None]
    if not parts:
        return None
    height_px, width_px = parts[0].shape[:2]
    out = np.zeros((height_px, width_px, 3), np.float32)
    for part in parts:
        if part.shape[:2] != (height_px, width_px):
            continue
        rgb = np.repeat(part[..., None], 3, 2) if part.ndim == 2 else part[..., :3]
        alpha = part[..., 3:4] / 255.0 if part.ndim == 3 and part.shape[2] == 4 else 1.0
        out = out * (1 - alpha) + rgb.astype(np.float32) * alpha
    return out.round().astype(np.uint8)


def mask_for_model(image: np.ndarray | None, size_px: int, source: str = "The canvas") -> np.ndarray:
    """Exactly what a model of `size_px` sees for a picture of a mask (bool size_px x size_px)."""
    if image is None:
        raise DataError(f"{source} is empty: draw vessels in white, upload a mask or load a tree first")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4 and arr[..., 3].min() == 255:
        arr = arr[..., :3]  # an opaque canvas: its alpha says nothing
    mask = binarize_mask(arr)
    _check_not_uniform(mask, source)
    return prepare_mask(mask, size_px, label=source)


def mask_picture(mask: np.ndarray, min_px: int = 256) -> np.ndarray:
    """A bool mask as a white-on-black uint8 RGB picture, enlarged (nearest) to at least `min_px`."""
    factor = max(1, -(-min_px // max(mask.shape)))
    big = np.kron(mask.astype(np.uint8), np.ones((factor, factor), np.uint8)) if factor > 1 else mask
    return mask_rgb(big)


@dataclass(frozen=True)
class LoadedMask:
    """A mask loaded from a file, the procedural generator or the vessel model, kept compactly
    (bit-packed at CANVAS_PX) in a session's state until it is used."""

    bits: bytes
    side_px: int
    origin: str  # said in the UI: "upload foo.png", "random tree (seed 3)", ...

    @classmethod
    def from_mask(cls, mask: np.ndarray, origin: str, side_px: int = CANVAS_PX) -> "LoadedMask":
        square = mask if mask.shape == (side_px, side_px) else prepare_mask(mask, side_px)
        return cls(np.packbits(square.astype(bool)).tobytes(), side_px, origin)

    def mask(self) -> np.ndarray:
        flat = np.unpackbits(np.frombuffer(self.bits, np.uint8), count=self.side_px * self.side_px)
        return flat.reshape(self.side_px, self.side_px).astype(bool)


def canvas_mask(editor_value: dict | np.ndarray | None) -> LoadedMask | None:
    """The sketch canvas as a LoadedMask, or None while it holds no vessel; DataError for a value that
    is not a picture."""
    image = editor_image(editor_value)
    rgb = None if image is None else np.asarray(image)[..., :3] if image.ndim == 3 else np.asarray(image)
    if rgb is None or not rgb.any():  # nothing drawn yet
        return None
    return LoadedMask.from_mask(mask_for_model(image, CANVAS_PX), "the canvas")


def current_mask(source: str, drawn: LoadedMask | None, loaded: LoadedMask | None, size_px: int) -> np.ndarray:
    """The mask a model of `size_px` sees from the active source: the sketch canvas ("draw") or the
    last loaded mask (any other source)."""
    if source == "draw":
        if drawn is None:
            raise DataError("The canvas is empty: draw vessels in white (or pick an example, a random tree, "
                            "an upload or a dreamt tree in the other tabs)")
        return prepare_mask(drawn.mask(), size_px)
    if loaded is None:
        raise DataError("No mask loaded yet: pick an example, draw a random tree, upload a mask or dream one "
                        "(or draw in the Draw tab)")
    return prepare_mask(loaded.mask(), size_px)


def blank_canvas(canvas_px: int = CANVAS_PX) -> dict:
    """An empty dark canvas to draw on."""
    return {"background": np.zeros((canvas_px, canvas_px, 3), np.uint8), "layers": [], "composite": None}


@dataclass(frozen=True)
class TreeKnobs:
    """The procedural generator's knobs the app exposes (see data.procedural.TreeParams)."""

    main_vessels: int = 4
    depth: int = 5
    tortuosity: float = 0.4
    width_px: float = 8.0
    eye: str = "left"

    def params(self) -> TreeParams:
        return TreeParams(main_vessels=int(self.main_vessels), depth=int(self.depth),
                          tortuosity=float(self.tortuosity), width_px=float(self.width_px), eye=self.eye)


def random_tree(seed: int, knobs: TreeKnobs = TreeKnobs(), size_px: int = CANVAS_PX) -> np.ndarray:
    """A procedural vessel tree (bool size_px x size_px), deterministic for a seed."""
    return procedural_tree(size_px, knobs.params(), int(seed))


def dream_tree(model: LoadedModel, seed: int, sampler: str = "dpmpp", steps: int = 20,
               on_draw: Callable[[int, int], None] | None = None, twigs: bool = False) -> tuple[np.ndarray, str, bool]:
    """A vessel tree from a stage-1 (vessel) model, bool at the canvas's size (CANVAS_PX, from the model's
    soft output and its treesr model: pipeline.vessel_masks), redrawn (new seeds) while it scores below the
    plausibility threshold; with `twigs`, the thin vessels the model cannot draw grown on after (twigs.py).
    Returns the tree, a note on the seed and score, and whether it passed. When no try passes, the seed's own
    tree comes back (passed False), so a user sees what the model draws.
    `on_draw(draw, max_tries)` reports each draw (pipeline.dream_trees)."""
    trees, seeds = dream_trees(model, [int(seed)], min_plausibility=plaus.DEFAULT_THRESHOLD,
                                on_draw=on_draw, size_px=CANVAS_PX, sampler=sampler, steps=steps)
    grown = lambda tree, seed: add_twigs(tree, seed) if twigs else tree  # noqa: E731
    thin = ", thin vessels grown on" if twigs else ""
    if trees[0] is None:
        raw = generate(model, None, [int(seed)], sampler=sampler, steps=steps)
        tree, small = vessel_masks(raw, CANVAS_PX, tree_sr=model.tree_sr)[0], vessel_masks(raw)[0]
        if not tree.any():
            raise DataError(f"the vessel model drew an empty tree from seed {seed}; try another seed")
        return grown(tree, int(seed)), (f"seed {seed}, plausibility {plaus.plausibility(small).value:.2f}: no try "
                                        f"reached the threshold {plaus.DEFAULT_THRESHOLD}, the filter would reject "
                                        f"it{thin}"), False
    redrawn = f", redrawn as seed {seeds[0]}" if seeds[0] != seed else ""
    judged = mask_at(trees[0], model.net_cfg.image_size)  # scored at the model's size, as the filter judged it
    return (grown(trees[0], seeds[0]),
            f"seed {seed}{redrawn}, plausibility {plaus.plausibility(judged).value:.2f}{thin}", True)


__all__ = ["CANVAS_PX", "UploadLimits", "check_upload", "mask_from_upload", "editor_image", "mask_for_model",
           "mask_picture", "LoadedMask", "canvas_mask", "current_mask", "blank_canvas", "TreeKnobs", "random_tree",
           "dream_tree"]
