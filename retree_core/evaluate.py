"""Evaluation by the protocol in the guide: segmenters against annotations, generators by fidelity and KID.

`evaluate_segmenter` scores a vessel segmenter on a dataset split inside the FOV at the annotation's
resolution (metrics.py). `evaluate_generator` generates one image per mask of a split and measures mask
fidelity (Dice between the mask and the segmenter's vessels in the generated image) and realism (KID,
and FID only with enough images) against the real images of the same split at the model's size.
Reports print as tables and save as CSV (one row per image) and JSON (settings, rows and means).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

import torch

from .config import SampleConfig
from .logs import log, progress_bar
from .data import AugmentConfig, estimate_fov, make_dataset, split_sample_list, style_of
from .data.embedded import remove_specks, ridge_response, ridge_threshold
from .data.layouts import load_sample
from .fidelity import SEGMENTER_NAME, analysis_view
from .images import grid, mask_rgb, to_uint8
from .metrics import METRIC_NAMES, dice, vessel_metrics
from .pipeline import FundusPipeline
from .realism import INSTALL_COMMAND, InceptionUnavailable, fid, grain, inception_features, inception_path, kid

GRID_MAX_ROWS = 8  # images shown in the mask | generated | real picture
DEFAULT_MIN_FID_IMAGES = 100  # below this many images per set FID is too biased to report


# ---- segmenters

class Segmenter(Protocol):
    """Anything that maps a fundus photograph to a vessel probability map; vessel where > threshold."""

    name: str
    threshold: float

    def __call__(self, image_rgb: np.ndarray, fov: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 image and bool HxW FOV -> float32 map in [0, 1] (any size; resized by callers)."""
        ...


@dataclass
class ClassicalSegmenter:
    """The classical ridge filter of `data.segment_vessels_classical` as a probability map.

    The Sato response r is mapped to r / (r + t), with t the filter's own per-image cut (the strongest
    VESSEL_FRACTION of the FOV), so the ranking (hence AUC) is the filter's and the map crosses 0.5
    exactly at its cut; pieces the filter drops as too small are halved to fall below 0.5. Thresholded
    at 0.5 this is pixel for pixel `segment_vessels_classical(image, fov)`.
    """

    name: str = SEGMENTER_NAME
    threshold: float = 0.5

    def __call__(self, image_rgb: np.ndarray, fov: np.ndarray) -> np.ndarray:
        fov = np.asarray(fov, dtype=bool)
        prob = np.zeros(fov.shape, dtype=np.float32)
        if not fov.any():
            return prob
        ridges, inner, scale = ridge_response(image_rgb, fov)
        if not inner.any():
            return prob
        cut = ridge_threshold(ridges, inner)
        response = np.where(inner, ridges, 0.0)
        denominator = response + cut
        np.divide(response, denominator, out=prob, where=denominator > 0, casting="unsafe")
        vessels = prob > self.threshold
        prob[vessels & ~remove_specks(vessels, scale)] *= 0.5
        return prob


SEGMENTERS = {"classical": ClassicalSegmenter}


def load_segmenter(name_or_path: str) -> Segmenter:
    """A segmenter by name ("classical") or a trained one by weights name or path (role segment)."""
    from .segmentation import load_learned_segmenter

    if name_or_path in SEGMENTERS:
        return SEGMENTERS[name_or_path]()
    try:
        return load_learned_segmenter(name_or_path)
    except ValueError as exc:  # CheckpointError
        raise ValueError(f"--segmenter {name_or_path}: no such segmenter ({exc}); use "
                         f"{', '.join(SEGMENTERS)} or the weights of a segment model") from None


def resize_map(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A probability map brought to `shape` (H, W) by bilinear interpolation (no-op if it fits)."""
    if prob.shape == tuple(shape):
        return prob
    return cv2.resize(prob.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


# ---- reports

@dataclass
class Report:
    """Rows (one per image) with settings, summary figures and the columns the rows hold."""

    kind: str  # "segmenter" or "generator"
    title: str
    settings: dict
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # extra JSON entries (KID, FID)
    notes: list[str] = field(default_factory=list)  # lines printed under the table
    picture: np.ndarray | None = None  # saved as grid.png
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # uint8 images behind the picture (not saved)

    def mean(self) -> dict[str, float]:
        """Mean over images of every numeric column (the per-image average the literature reports)."""
        numeric = [c for c in self.columns if self.rows and isinstance(self.rows[0][c], float)]
        return {c: float(np.mean([row[c] for row in self.rows])) for c in numeric}

    def table(self) -> str:
        """The rows and their mean as a fixed-width text table."""
        mean = self.mean()
        width = max([len("mean")] + [len(str(row[self.columns[0]])) for row in self.rows])
        lines = [f"{self.columns[0]:<{width}} " + " ".join(f"{c:>11}" for c in self.columns[1:])]
        for row in self.rows + [{self.columns[0]: "mean", **mean}]:
            cells = [f"{row[c]:>11.4f}" if isinstance(row.get(c), float) else f"{row.get(c, ''):>11}"
                     for c in self.columns[1:]]
            lines.append(f"{row[self.columns[0]]:<{width}} " + " ".join(cells))
        return "\n".join(lines)

    def render(self) -> str:
        """Title, table and notes, as printed by the command line."""
        return "\n".join([self.title, self.table(), *self.notes])

    def save(self, output_dir: str | Path) -> list[Path]:
        """Write metrics.csv (one row per image), metrics.json (settings, rows, mean, summary) and
        grid.png when there is a picture; returns the paths written."""
        from .images import save_png

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = out / "metrics.csv", out / "metrics.json"
        with csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        document = {"kind": self.kind, "settings": self.settings, "num_images": len(self.rows),
                    "mean": self.mean(), **self.summary, "per_image": self.rows}
        json_path.write_text(json.dumps(document, indent=2))
        written = [csv_path, json_path]
        if self.picture is not None:
            written.append(save_png(out / "grid.png", self.picture))
        return written


# ---- segmenter evaluation

def evaluate_segmenter(segmenter: Segmenter, data_roots: Sequence[str | Path], split: str = "val",
                       progress: bool = False) -> Report:
    """Vessel metrics of `segmenter` on every image of a split, inside the FOV, at annotation size.

    A missing FOV annotation is estimated from the photograph (data.estimate_fov).
    """
    samples = split_sample_list(data_roots, split)
    title = f"{segmenter.name} (threshold {segmenter.threshold}), {split} split, inside the FOV:"
    report = Report("segmenter", title, {"segmenter": segmenter.name, "threshold": segmenter.threshold,
                                  "split": split, "data_roots": [str(r) for r in data_roots or []],
                                  "images": [s.name for s in samples]},
                    ["name", *METRIC_NAMES])
    with progress_bar(len(samples), "segmenting", progress) as bar:
        for sample in samples:
            image, truth, fov = load_sample(sample)
            fov = estimate_fov(image) if fov is None else fov
            prob = resize_map(segmenter(image, fov), truth.shape)
            report.rows.append({"name": sample.name, **vessel_metrics(prob, truth, fov, segmenter.threshold)})
            log.debug("%s: F1 %.4f", sample.name, report.rows[-1]["f1"])
            bar.update()
    return report


# ---- generator evaluation

@dataclass
class GenerationOptions:
    """How images are sampled for evaluation (image i of the split with seed sample.seed + i) and how many
    are measured; what finishes them (super-resolution, aperture, precision) is the pipeline's."""

    sample: SampleConfig = field(default_factory=SampleConfig)
    num: int | None = None  # masks used (first of the split); None: all
    batch_size: int = 4
    min_fid_images: int = DEFAULT_MIN_FID_IMAGES
    require_kid: bool = True  # False: without the Inception network, report fidelity and say what to install
    match_styles: bool = False  # each image in its own dataset's style where the model has it (else sample.style)


def scales(guidance: dict[str, float]) -> str:
    """Guidance scales per style as text: one number when they agree."""
    values = set(guidance.values())
    return f"{values.pop():g}" if len(values) == 1 else ", ".join(f"{g:g} ({s})" for s, g in sorted(guidance.items()))


def mask_fidelity(segmenter: Segmenter, image_rgb: np.ndarray, mask: np.ndarray, fov: np.ndarray) -> float:
    """Dice inside `fov` between `mask` and the vessels `segmenter` finds in `image_rgb`.

    Images smaller than fidelity.MIN_ANALYSIS_PX are enlarged first (as in the app's fidelity score):
    a ridge filter needs a few pixels per vessel.
    """
    image_rgb, mask, fov = analysis_view(image_rgb, mask, fov)
    found = resize_map(segmenter(image_rgb, fov), mask.shape) > segmenter.threshold
    return dice(found, mask, fov)


def evaluate_generator(pipe: FundusPipeline, data_roots: Sequence[str | Path], segmenter: Segmenter,
                       split: str = "val", options: GenerationOptions | None = None,
                       progress: bool = False, should_stop: Callable[[], bool] | None = None) -> Report:
    """Mask fidelity per image and KID (FID with enough images) of a fundus pipeline on a split.

    Masks, FOVs and real images come from the dataset at the pipeline's output size, framed as in
    training (square around the FOV, no augmentation). Image i is generated from mask i with seed + i;
    KID compares the generated images with all real images of the split. The report's picture is a
    mask | generated | real grid. `should_stop`, asked between batches, ends the generation early: the
    report then scores the images made so far.
    """
    options = options or GenerationOptions()
    try:
        inception_path()  # fail before any sampling if the Inception weights are missing
        kid_missing = None
    except InceptionUnavailable:
        if options.require_kid:
            raise
        kid_missing = (f"KID and FID not computed: the Inception network is not installed here ({INSTALL_COMMAND}"
                       f"; requirements-nodeps.txt)")
    sample = pipe.options(options.sample)
    out_px = pipe.output_px  # masks, real images and scores at the output's size
    dataset = make_dataset(data_roots, out_px, AugmentConfig(enabled=False), split=split)
    items = [dataset[i] for i in range(len(dataset))]
    real = to_uint8(torch.stack([item["image"] for item in items]))
    masks = np.stack([item["mask"][0].numpy() > 0 for item in items])
    fovs = np.stack([item["fov"][0].numpy() > 0.5 for item in items])
    planned = len(items) if options.num is None else min(options.num, len(items))

    styles = [style_of(n) if options.match_styles and style_of(n) in pipe.styles else sample.style
              for n in dataset.names]
    guidance = {style: pipe.options(replace(options.sample, style=style)).guidance for style in set(styles)}
    generated = []
    with progress_bar(planned, "generating", progress) as bar:
        for start in range(0, planned, options.batch_size):
            if should_stop is not None and should_stop():
                break
            stop = min(start + options.batch_size, planned)
            for style, run in groupby(range(start, stop), key=styles.__getitem__):  # a call per style in the batch
                run = list(run)
                generated.append(pipe(masks[run[0]:run[-1] + 1], replace(sample, seed=sample.seed + run[0],
                                                                         style=style, guidance=guidance[style]))[0])
            bar.update(stop - start)
    if not generated:
        raise ValueError("the evaluation was stopped before its first image")
    generated = np.concatenate(generated)
    count = len(generated)

    model = pipe.model
    settings = {**pipe.settings(sample), "source": model.source, "sr_source": pipe.sr.source if pipe.sr else None,
                "split": split, "data_roots": [str(r) for r in data_roots or []], "segmenter": segmenter.name,
                **{k: v for k, v in asdict(options).items() if k != "sample"}}
    scaled = f" super-resolved to {out_px} px" if pipe.sr else ""
    title = (f"{Path(model.source).stem} ({model.net_cfg.role}, {pipe.size_px} px{scaled}, {sample.sampler} "
             f"{sample.steps} steps, guidance {scales(guidance)}): mask fidelity = Dice in the FOV by "
             f"{segmenter.name}, {split} split:")
    # real_image_dice: the same score on the real photograph, the ceiling the segmenter allows at this size;
    # grain / real_grain: pixel-scale noise (realism.grain) of the generated and the real image
    report = Report("generator", title, settings,
                    ["name", "seed", "style", "guidance", "fidelity_dice", "real_image_dice", "grain", "real_grain"])
    for i in range(count):
        report.rows.append({"name": dataset.names[i], "seed": sample.seed + i, "style": styles[i],
                            "guidance": guidance[styles[i]],
                            "fidelity_dice": mask_fidelity(segmenter, generated[i], masks[i], fovs[i]),
                            "real_image_dice": mask_fidelity(segmenter, real[i], masks[i], fovs[i]),
                            "grain": grain(generated[i], fovs[i]), "real_grain": grain(real[i], fovs[i])})

    device = next(model.net.parameters()).device
    if kid_missing:
        kid_result = fid_result = None
    elif min(count, len(real)) >= 2:
        generated_features = inception_features(generated, device=device)
        real_features = inception_features(real, device=device)
        kid_result = kid(generated_features, real_features)
        fid_result = (fid(generated_features, real_features)
                      if min(count, len(real)) >= options.min_fid_images else None)
        kid_note = str(kid_result)
    else:  # one image per set: nothing to compare distributions with
        kid_result = fid_result = None
        kid_note = f"KID not reported: {count} generated and {len(real)} real image(s), fewer than 2 per set"
    report.summary["kid"] = None if kid_result is None else asdict(kid_result)
    report.summary["fid"] = None if fid_result is None else asdict(fid_result)
    report.notes = [kid_missing] if kid_missing else [kid_note, str(fid_result) if fid_result is not None else
                                                      f"FID not reported: {count} generated and {len(real)} real "
                                                      f"images, fewer than {options.min_fid_images} per set"]
    if count < planned:
        report.notes.insert(0, f"stopped: {count} of {planned} images generated and scored")
    rows = [np.stack([mask_rgb(masks[i]), generated[i], real[i]]) for i in range(min(count, GRID_MAX_ROWS))]
    report.picture = grid(rows)
    report.arrays = {"mask": np.stack([mask_rgb(m) for m in masks[:count]]), "generated": generated,
                     "real": real[:count]}
    return report


# ---- super-resolution evaluation

def evaluate_sr(name_or_path: str, data_roots: Sequence[str | Path], split: str = "val",
                device: str = "cpu") -> Report:
    """PSNR and SSIM of a super-resolution model against bicubic upsampling, per image of a split.

    Each photograph is framed as in training at the model's output size (square around the FOV); the
    input is that image area-downsampled by the model's factor, the target the image itself.
    """
    from .superres import bicubic, downsample, psnr, sr_forward, ssim
    from .weights import load_model

    model = load_model(name_or_path, role="sr", device=device)
    size_px, scale = model.net_cfg.image_size, model.net_cfg.sr_scale
    dataset = make_dataset(data_roots, size_px, AugmentConfig(enabled=False), split=split)
    settings = {"sr": name_or_path, "source": model.source, "scale": scale, "image_size_px": size_px,
                "split": split, "data_roots": [str(r) for r in data_roots or []]}
    report = Report("sr", f"super-resolution x{scale} to {size_px} px vs bicubic, {split} split:", settings,
                    ["name", "psnr_sr", "psnr_bicubic", "ssim_sr", "ssim_bicubic"])
    pictures = []
    for i in range(len(dataset)):
        item = dataset[i]
        hr, mask = item["image"][None].to(device), item["mask"][None].to(device)
        with torch.inference_mode():
            small = downsample(hr, scale)
            base = bicubic(small, hr.shape[-2:])
            sr = sr_forward(model.net, small, mask)
            ssims = float(ssim(sr, hr)), float(ssim(base, hr))
        truth, up, out = to_uint8(hr)[0], to_uint8(base)[0], to_uint8(sr)[0]
        report.rows.append({"name": dataset.names[i], "psnr_sr": psnr(out, truth), "psnr_bicubic": psnr(up, truth),
                            "ssim_sr": ssims[0], "ssim_bicubic": ssims[1]})
        if len(pictures) < GRID_MAX_ROWS:
            pictures.append(np.stack([up, out, truth]))
    report.picture = grid(pictures)
    report.notes = ["columns of grid.png: bicubic | super-resolved | real"]
    return report


__all__ = ["ClassicalSegmenter", "GenerationOptions", "Report", "SEGMENTERS", "Segmenter", "evaluate_sr",
           "evaluate_generator", "evaluate_segmenter", "load_segmenter", "mask_fidelity", "resize_map", "scales"]
