"""Editing a real photograph through its vessel tree: segment it, change the tree, regenerate what changed.

`PhotoView` is the square around a photograph's field of view, the frame the models were trained on:
the photograph's model view comes from it and edits go back into it. Two ways to regenerate, both with
the edited tree as the condition:
- inpaint (RePaint, Lugmayr et al. 2022): only the edit region (the changed tree pixels dilated by a
  margin) is sampled; at every step the rest is the photograph noised to that step, and `resample` > 1
  re-noises and repeats each step so the new pixels agree with the kept ones;
- vary (SDEdit, Meng et al. 2022): the whole view is noised to `strength` of the schedule and denoised
  (0: the photograph unchanged; 1: generation from noise with the same seed).
The result at the output size (super-resolved when the pipeline has an sr model) is pasted back into
the full-resolution photograph inside the region only: every pixel outside it stays bit-identical.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from . import precision
from .config import SampleConfig
from .data import estimate_fov, prepare_mask, read_rgb
from .data.augment import fov_square
from .diffusion import NoiseSchedule
from .evaluate import Segmenter, mask_fidelity, resize_map
from .images import from_uint8, mask_rgb, mask_to_tensor, save_png, to_uint8
from .pipeline import FundusPipeline, style_tensor
from .samplers import (Callback, Step, ddpm_step, get_sampler, guided, make_generators, predict, randn,
                       schedule_pairs)
from .superres import upscale

EDIT_MODES = ("inpaint", "vary")
FEATHER_PX = 4  # output-size pixels over which a pasted region fades into the photograph (inside the region)


@dataclass(frozen=True)
class EditConfig:
    mode: str = "inpaint"
    margin_px: int = 3  # inpaint: the changed pixels dilated by this, at the model's size
    resample: int = 1  # inpaint: passes per step (RePaint's resampling; 1: none)
    strength: float = 0.5  # vary: how far the photograph is noised (0..1)

    def __post_init__(self) -> None:
        if self.mode not in EDIT_MODES:
            raise ValueError(f"edit mode must be one of {', '.join(EDIT_MODES)}, got {self.mode!r}")
        if not 0 <= self.margin_px <= 64 or not 1 <= self.resample <= 10 or not 0 <= self.strength <= 1:
            raise ValueError(f"margin 0-64 px, resample 1-10 and strength 0-1, got {self.margin_px}, "
                             f"{self.resample} and {self.strength}")


@dataclass(frozen=True)
class PhotoView:
    """The square (x0, y0, side) around a photograph's field of view, in the photograph's pixels; parts
    beyond the photograph read as black."""

    x0: int
    y0: int
    side: int
    height: int
    width: int

    @classmethod
    def of(cls, photo: np.ndarray, fov: np.ndarray | None = None) -> "PhotoView":
        centre_x, centre_y, side = fov_square(estimate_fov(photo) if fov is None else fov)  # the training frame
        side = int(side)
        x0, y0 = int(round(centre_x - (side - 1) / 2)), int(round(centre_y - (side - 1) / 2))
        return cls(x0, y0, side, photo.shape[0], photo.shape[1])

    def _overlap(self) -> tuple[slice, slice, slice, slice]:
        """(photo rows, photo cols, square rows, square cols) where the square and the photograph meet."""
        top, left = max(self.y0, 0), max(self.x0, 0)
        bottom, right = min(self.y0 + self.side, self.height), min(self.x0 + self.side, self.width)
        return (slice(top, bottom), slice(left, right),
                slice(top - self.y0, bottom - self.y0), slice(left - self.x0, right - self.x0))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The square of a photograph-sized array (zeros beyond the photograph)."""
        out = np.zeros((self.side, self.side, *image.shape[2:]), image.dtype)
        rows, cols, square_rows, square_cols = self._overlap()
        out[square_rows, square_cols] = image[rows, cols]
        return out

    def view(self, image: np.ndarray, size_px: int) -> np.ndarray:
        """The square resized to size_px (area filter; a bool mask comes back as a bool mask)."""
        square = self.crop(image)
        if square.dtype == bool:
            return resize_tree(square, size_px)
        return cv2.resize(square, (size_px, size_px), interpolation=cv2.INTER_AREA)

    def paste(self, photo: np.ndarray, view_image: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a copy of `photo` with `view_image` (any square size) inside `region` (bool, the view image's
        size), the region at the photograph's size): the region fades in over FEATHER_PX inside its edge,
        so pixels outside it are untouched."""
        size = view_image.shape[0]
        inside = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        alpha = np.clip(inside / FEATHER_PX, 0, 1).astype(np.float32) if size > 1 else region.astype(np.float32)
        scale = (self.side, self.side)
        big = cv2.resize(view_image, scale, interpolation=cv2.INTER_CUBIC if self.side > size else cv2.INTER_AREA)
        weight = cv2.resize(alpha, scale, interpolation=cv2.INTER_LINEAR)
        inside_square = cv2.resize(region.astype(np.uint8), scale, interpolation=cv2.INTER_NEAREST) > 0
        weight[~inside_square] = 0
        out, where = photo.copy(), np.zeros(photo.shape[:2], bool)
        rows, cols, square_rows, square_cols = self._overlap()
        where[rows, cols] = inside_square[square_rows, square_cols]
        w = weight[square_rows, square_cols, None]
        mixed = w * big[square_rows, square_cols].astype(np.float32) + (1 - w) * photo[rows, cols].astype(np.float32)
        changed = w[..., 0] > 0
        out[rows, cols][changed] = np.clip(np.rint(mixed[changed]), 0, 255).astype(np.uint8)
        return out, where


def resize_tree(tree: np.ndarray, size_px: int) -> np.ndarray:
    """A bool mask area-resampled to size_px x size_px and cut at half coverage."""
    return cv2.resize(np.asarray(tree, np.float32), (size_px, size_px), interpolation=cv2.INTER_AREA) >= 0.5


def edit_region(before: np.ndarray, after: np.ndarray, margin_px: int) -> np.ndarray:
    """The pixels whose vessel label changed, dilated by a disc of `margin_px`."""
    changed = np.asarray(before, bool) != np.asarray(after, bool)
    if margin_px == 0 or not changed.any():
        return changed
    yy, xx = np.mgrid[-margin_px:margin_px + 1, -margin_px:margin_px + 1]
    disc = (yy ** 2 + xx ** 2 <= margin_px ** 2).astype(np.uint8)  # every pixel within margin_px
    return cv2.dilate(changed.astype(np.uint8), disc) > 0


@torch.inference_mode()
def regenerate(pipe: FundusPipeline, photo_view: np.ndarray, tree: np.ndarray, region: np.ndarray | None,
               cfg: EditConfig, options: SampleConfig | None = None, callback: Callback | None = None) -> np.ndarray:
    """The model-size view (uint8) regenerated for `tree` (bool, model size): inside `region` (inpaint)
    or everywhere from `cfg.strength` (vary). Seed, sampler, steps and guidance from `options`."""
    options = pipe.options(options)
    model = pipe.model
    schedule = NoiseSchedule(model.diffusion_cfg)
    device = next(model.net.parameters()).device
    known = from_uint8(photo_view)[None].to(device)
    style = style_tensor(model.net_cfg, options.style, 1, device)
    eps_fn = schedule.eps_fn(guided(model.net, mask_to_tensor(tree).to(device), options.guidance, style))
    gens = make_generators([options.seed])
    x = randn(known.shape, gens, device)  # the first draw, as generation's
    with precision.autocast(model.precision, device):
        if cfg.mode == "vary":
            skip = options.steps - int(round(cfg.strength * options.steps))
            if skip == options.steps:
                return np.asarray(photo_view).copy()
            sampler = get_sampler(options.sampler)
            if skip:  # the photograph noised to the first kept step; skip 0 starts from noise, as generation
                spacing = inspect.signature(sampler).parameters["spacing"].default
                t = schedule_pairs(schedule, options.steps, spacing, skip)[0][0]
                x = schedule.add_noise(known, torch.tensor([t]), x)
            out = sampler(eps_fn, x, schedule, options.steps, generators=gens, callback=callback, skip=skip)
        else:
            if region is None:
                raise ValueError("inpainting needs the edit region (edit_region)")
            keep = 1 - torch.from_numpy(np.asarray(region, np.float32))[None, None].to(device)
            out = _repaint(eps_fn, x, known, keep, schedule, options.steps, cfg.resample, gens, callback)
    return to_uint8(out)[0]


def _repaint(eps_fn, x, known, keep, schedule: NoiseSchedule, steps: int, resample: int, gens,
             callback: Callback | None) -> torch.Tensor:
    """RePaint with ancestral DDPM steps: the kept pixels are the photograph noised to each step."""
    pairs = schedule_pairs(schedule, steps, "uniform")
    for i, (t, _, ab, ab_next) in enumerate(pairs):
        for r in range(resample):
            noisy_known = ab ** 0.5 * known + (1 - ab) ** 0.5 * randn(x.shape, gens, x.device)
            x = keep * noisy_known + (1 - keep) * x
            _, x0 = predict(eps_fn, x, t, schedule, True)
            if callback and r == 0:
                callback(Step(i, steps, t, x, x0))
            if ab_next >= 1:
                x = x0
                break
            x_next = ddpm_step(x, x0, ab, ab_next, gens)
            if r < resample - 1:  # back to step t and again: the new pixels settle with the kept ones
                x = (ab / ab_next) ** 0.5 * x_next + (1 - ab / ab_next) ** 0.5 * randn(x.shape, gens, x.device)
            else:
                x = x_next
    return keep * known + (1 - keep) * x


@dataclass
class EditResult:
    photo: np.ndarray  # the edited photograph at its own size
    region: np.ndarray  # bool, the photograph's size: where pixels may differ
    view: np.ndarray  # the regenerated view at the output size (super-resolved)
    tree: np.ndarray  # the edited tree at the output size


class PhotoEditor:
    """Segment a photograph's tree (`tree`), then regenerate the photograph for an edited tree (`edit`)."""

    def __init__(self, pipe: FundusPipeline, segmenter: Segmenter):
        self.pipe, self.segmenter = replace(pipe, aperture=False), segmenter

    def tree(self, photo: np.ndarray, view: PhotoView | None = None) -> np.ndarray:
        """The photograph's vessel tree at the output size of its view (bool), by the segmenter at its
        threshold."""
        view = view or PhotoView.of(photo)
        image = view.view(photo, self.pipe.output_px)
        fov = view.view(estimate_fov(photo), self.pipe.output_px)
        prob = resize_map(self.segmenter(image, fov), fov.shape)
        return (prob > self.segmenter.threshold) & fov

    def edit(self, photo: np.ndarray, edited_tree: np.ndarray, cfg: EditConfig = EditConfig(),
             options: SampleConfig | None = None, callback: Callback | None = None) -> EditResult:
        """`edited_tree`: bool at the output size of the photograph's view (as `tree` gives it)."""
        view = PhotoView.of(photo)
        out_px, size_px = self.pipe.output_px, self.pipe.size_px
        tree_out = np.asarray(edited_tree, bool)
        if tree_out.shape != (out_px, out_px):
            tree_out = resize_tree(tree_out, out_px)
        region = (np.ones((size_px, size_px), bool) if cfg.mode == "vary" else
                  edit_region(resize_tree(self.tree(photo, view), size_px), resize_tree(tree_out, size_px),
                              cfg.margin_px))
        photo_view = view.view(photo, size_px)
        options = self.pipe.options(options)
        if not region.any() or (cfg.mode == "vary" and round(cfg.strength * options.steps) == 0):  # nothing to do
            out = view.view(photo, out_px)
            return EditResult(photo.copy(), np.zeros(photo.shape[:2], bool), out, tree_out)
        result = regenerate(self.pipe, photo_view, resize_tree(tree_out, size_px), region, cfg, options, callback)
        big = upscale(self.pipe.sr, result[None], tree_out[None])[0] if self.pipe.sr is not None else result
        region_out = cv2.resize(region.astype(np.uint8), (out_px, out_px), interpolation=cv2.INTER_NEAREST) > 0
        edited, changed = view.paste(photo, big, region_out)
        return EditResult(edited, changed, big, tree_out)


def edit_files(editor: PhotoEditor, photo_path: str | Path, out_dir: str | Path, mask_path: str | Path | None = None,
               cfg: EditConfig = EditConfig(), options: SampleConfig | None = None) -> dict:
    """The command line's edit: without `mask_path`, write the photograph's tree (tree.png, to edit in any
    image editor, and view.png, the view it belongs to); with it, regenerate and write edited.png (the
    photograph's size), edited_tree.png, difference.png and region.png. Returns what it measured."""
    out = Path(out_dir)
    photo = read_rgb(photo_path)
    view = PhotoView.of(photo)
    if mask_path is None:
        save_png(out / "tree.png", mask_rgb(editor.tree(photo, view)))
        save_png(out / "view.png", view.view(photo, editor.pipe.output_px))
        return {"tree": str(out / "tree.png"), "view": str(out / "view.png")}
    tree = prepare_mask(mask_path, editor.pipe.output_px)
    result = editor.edit(photo, tree, cfg, options)
    settings = {**editor.pipe.settings(options), "edit": asdict(cfg), "photo": Path(photo_path).name}
    save_png(out / "edited.png", result.photo, settings)
    save_png(out / "edited_tree.png", mask_rgb(result.tree))
    save_png(out / "difference.png", difference(photo, result.photo))
    save_png(out / "region.png", mask_rgb(result.region))
    fov = view.view(estimate_fov(photo), editor.pipe.output_px)
    return {"edited": str(out / "edited.png"), "changed_px": int((result.photo != photo).any(-1).sum()),
            "region_px": int(result.region.sum()),
            "fidelity": mask_fidelity(editor.segmenter, result.view, result.tree, fov)}


def difference(before: np.ndarray, after: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """|after - before| per channel, amplified, as a picture (black: unchanged)."""
    return np.clip(np.abs(after.astype(np.int16) - before.astype(np.int16)) * gain, 0, 255).astype(np.uint8)


__all__ = ["EDIT_MODES", "EditConfig", "EditResult", "PhotoEditor", "PhotoView", "difference", "edit_files",
           "edit_region", "regenerate", "resize_tree"]
