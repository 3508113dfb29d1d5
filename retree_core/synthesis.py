"""Synthetic training data: N (fundus image, vessel mask) pairs from both stages, as a dataset zip.

Stage 1 draws a vessel tree (the vessel model, or the procedural generator when there is none);
stage 2 paints a fundus photograph for it (a concat or SPADE model). The zip has the seed's layout,
`images/img_XXX.png` + `masks/seg_XXX.png`, so it can be trained on directly (also by this app).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from .aperture import apply_aperture
from .archives import write_pairs_zip
from .data import mask_at
from .data.procedural import TreeParams, procedural_tree
from .pipeline import TREE_TRIES, check_options, dream_trees, generate
from .images import to_uint8
from .superres import fits, upscale
from .weights import LoadedModel

TREE_SOURCES = ("vessel", "procedural")


@dataclass
class SynthesisConfig:
    count: int = 8
    seed: int = 0
    trees: str = "vessel"  # vessel: the stage-1 model; procedural: the learning-free generator
    sampler: str = "dpmpp"
    steps: int = 20
    guidance: float | None = None  # None: the image model's recommended scale
    aperture: bool = True  # finish each image (and cut its mask) with the round aperture (aperture.py)

    def check(self, max_count: int) -> None:
        if not isinstance(self.count, (int, np.integer)) or not 1 <= self.count <= max_count:
            raise ValueError(f"the number of pairs must be from 1 to {max_count}, got {self.count!r}")
        if self.trees not in TREE_SOURCES:
            raise ValueError(f"trees must be one of {', '.join(TREE_SOURCES)}, got {self.trees!r}")


@dataclass
class SynthesisProgress:
    """After each pair: how far, the pair just made, and the zip once everything is written."""

    done: int
    total: int
    image: np.ndarray | None
    mask: np.ndarray | None
    zip_path: Path | None = None
    note: str = ""


def varied_tree_params(seed: int, index: int) -> TreeParams:
    """Procedural knobs drawn per pair, so a synthetic dataset is not one tree shape repeated."""
    rng = np.random.default_rng([seed, index])
    return TreeParams(main_vessels=int(rng.integers(3, 6)), nasal_vessels=int(rng.integers(1, 4)),
                      macular_vessels=int(rng.integers(1, 4)), depth=int(rng.integers(4, 7)),
                      tortuosity=float(rng.uniform(0.2, 0.8)), width_px=float(rng.uniform(6.5, 10.0)),
                      eye=("left", "right")[int(rng.integers(2))])


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_single_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> tuple[Path, Path]:
    """One generated image as `stem.png`, and with its mask as `stem_pair.zip` in the seed layout."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{stem}.png"
    png.write_bytes(png_bytes(image))
    pair = write_pairs_zip(folder / f"{stem}_pair.zip", [("images/img_000.png", png_bytes(image)),
                                                        ("masks/seg_000.png", png_bytes(mask.astype(np.uint8) * 255))])
    return png, pair


def tree_masks(vessel_model: LoadedModel | None, seeds: list[int], size_px: int, *, trees: str = "vessel",
               first_seed: int = 0, min_plausibility: float | None = None, max_tries: int = TREE_TRIES,
               **options) -> tuple[np.ndarray, int]:
    """Stage 1 for a batch of seeds: trees from the vessel model, redrawn below the plausibility
    threshold (default plausibility.DEFAULT_THRESHOLD; pipeline.dream_trees), or procedural ones (knobs
    varied per pair). Returns the masks at size_px and how many procedural trees stood in for stage-1
    trees that stayed implausible."""
    from .plausibility import DEFAULT_THRESHOLD

    def procedural(seed: int) -> np.ndarray:
        return procedural_tree(size_px, varied_tree_params(first_seed, seed - first_seed), seed)

    if vessel_model is None or trees == "procedural":
        return np.stack([procedural(seed) for seed in seeds]), 0
    threshold = DEFAULT_THRESHOLD if min_plausibility is None else min_plausibility
    dreamt, _ = dream_trees(vessel_model, seeds, min_plausibility=threshold, max_tries=max_tries, **options)
    masks = [procedural(seed) if tree is None else mask_at(tree, size_px) for tree, seed in zip(dreamt, seeds)]
    return np.stack(masks), sum(tree is None for tree in dreamt)


def synthesise_pairs(image_model: LoadedModel, vessel_model: LoadedModel | None, cfg: SynthesisConfig,
                     zip_path: str | Path, max_count: int = 1000,
                     should_stop: Callable[[], bool] | None = None,
                     sr_model: LoadedModel | None = None) -> Iterator[SynthesisProgress]:
    """Make `cfg.count` pairs one at a time, yielding progress; the last item carries the zip. If
    stopped, the zip holds the pairs finished so far. Nothing is written if anything fails. With an
    `sr_model` that fits the image model, pairs are at its size: trees drawn there (or upsampled),
    images super-resolved conditioned on them."""
    cfg.check(max_count)
    guidance = image_model.guidance if cfg.guidance is None else cfg.guidance
    check_options(cfg.sampler, cfg.steps, guidance, image_model.diffusion_cfg.timesteps)
    if image_model.net_cfg.role not in ("concat", "spade"):
        raise ValueError(f"stage 2 needs a concat or SPADE model, not a {image_model.net_cfg.role} model")
    size_px = image_model.net_cfg.image_size
    if sr_model is not None and not fits(sr_model, size_px):
        raise ValueError(f"the super-resolution model takes {sr_model.net_cfg.sr_input_px} px images; "
                         f"the image model makes {size_px} px ones")
    out_px = sr_model.net_cfg.image_size if sr_model is not None else size_px
    files: list[tuple[str, bytes]] = []
    stand_ins = 0
    for index in range(cfg.count):
        if should_stop and should_stop():
            break
        masks, stood_in = tree_masks(vessel_model, [cfg.seed + index], out_px, trees=cfg.trees,
                                     first_seed=cfg.seed, sampler=cfg.sampler, steps=cfg.steps)
        mask, stand_ins = masks[0], stand_ins + stood_in
        small = mask_at(mask, size_px)
        image = to_uint8(generate(image_model, small, [cfg.seed + index], sampler=cfg.sampler,
                                  steps=cfg.steps, guidance=guidance))[0]
        if sr_model is not None:
            image = upscale(sr_model, image, mask)
        if cfg.aperture:
            image, mask = apply_aperture(image, mask)
        files += [(f"images/img_{index:03d}.png", png_bytes(image)),
                  (f"masks/seg_{index:03d}.png", png_bytes(mask.astype(np.uint8) * 255))]
        yield SynthesisProgress(index + 1, cfg.count, image, mask)
    done = len(files) // 2
    note = f"{stand_ins} implausible stage-1 tree(s) replaced by procedural ones" if stand_ins else ""
    if done == 0:
        yield SynthesisProgress(0, cfg.count, None, None, None, "stopped before the first pair")
        return
    yield SynthesisProgress(done, cfg.count, None, None, write_pairs_zip(zip_path, files), note)


__all__ = ["TREE_SOURCES", "SynthesisConfig", "SynthesisProgress", "varied_tree_params", "png_bytes",
           "write_single_pair", "synthesise_pairs", "tree_masks"]
