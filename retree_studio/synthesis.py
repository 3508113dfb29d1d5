"""Synthetic training data: N (fundus image, vessel mask) pairs from both stages, as a dataset zip.

Stage 1 draws a vessel tree (the vessel model, or the procedural generator when there is none);
stage 2 paints a fundus photograph for it (a concat or SPADE model). The zip has the seed's layout,
`images/img_XXX.png` + `masks/seg_XXX.png` (+ `fov/fov_XXX.png`, the round aperture's field of view), so it
can be trained on directly (also by this app).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from retree_core.config import SampleConfig
from retree_core.images import png_bytes
from retree_core.pipeline import FundusPipeline, tree_masks
from retree_core.twigs import TWIGS_BY_DEFAULT
from retree_core.weights import LoadedModel

from .archives import write_pairs_zip

TREE_SOURCES = ("vessel", "procedural")


@dataclass
class SynthesisConfig:
    count: int = 8
    trees: str = "vessel"  # vessel: the stage-1 model; procedural: the learning-free generator
    sample: SampleConfig = field(default_factory=SampleConfig)  # pair i: seed sample.seed + i, both stages
    twigs: bool = TWIGS_BY_DEFAULT  # stage-1 trees with the thin vessels the model cannot draw grown on (twigs.py)

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


def pair_files(name: str, image: np.ndarray, mask: np.ndarray, fov: np.ndarray | None,
               settings: dict | None) -> list[tuple[str, bytes]]:
    """A pair's files in the seed layout (pairs.py): image (with `settings`), mask, and FOV when given."""
    files = [(f"images/img_{name}.png", png_bytes(image, settings)),
             (f"masks/seg_{name}.png", png_bytes(mask.astype(np.uint8) * 255))]
    return files + ([] if fov is None else [(f"fov/fov_{name}.png", png_bytes(fov.astype(np.uint8) * 255))])


def write_single_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray,
                      settings: dict | None = None, fov: np.ndarray | None = None) -> tuple[Path, Path]:
    """One generated image as `stem.png`, and with its mask (and FOV) as `stem_pair.zip` in the seed layout;
    the image carries `settings` (what made it) in its PNG text chunk."""
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{stem}.png"
    png.write_bytes(png_bytes(image, settings))
    pair = write_pairs_zip(folder / f"{stem}_pair.zip", pair_files("000", image, mask, fov, settings))
    return png, pair


def synthesise_pairs(pipe: FundusPipeline, vessel_model: LoadedModel | None, cfg: SynthesisConfig,
                     zip_path: str | Path, max_count: int = 1000,
                     should_stop: Callable[[], bool] | None = None) -> Iterator[SynthesisProgress]:
    """Make `cfg.count` pairs one at a time, yielding progress; the last item carries the zip. If
    stopped, the zip holds the pairs finished so far. Nothing is written if anything fails. Trees are
    drawn at the pipeline's output size (its super-resolution model's, when it has one)."""
    cfg.check(max_count)
    options = pipe.options(cfg.sample)
    files: list[tuple[str, bytes]] = []
    stand_ins = done = 0
    for index in range(cfg.count):
        if should_stop and should_stop():
            break
        seed = options.seed + index
        masks, stood_in = tree_masks(vessel_model, [seed], pipe.output_px, trees=cfg.trees, first_seed=options.seed,
                                     twigs=cfg.twigs, sampler=options.sampler, steps=options.steps)
        stand_ins += stood_in
        images, cut = pipe(masks, replace(options, seed=seed))
        image, mask = images[0], cut[0]
        fov = pipe.field_of_view(image)
        files += pair_files(f"{index:03d}", image, mask, fov, {**pipe.settings(options), "seed": seed})
        done += 1
        yield SynthesisProgress(index + 1, cfg.count, image, mask)
    note = f"{stand_ins} implausible stage-1 tree(s) replaced by procedural ones" if stand_ins else ""
    if done == 0:
        yield SynthesisProgress(0, cfg.count, None, None, None, "stopped before the first pair")
        return
    yield SynthesisProgress(done, cfg.count, None, None, write_pairs_zip(zip_path, files), note)


__all__ = ["TREE_SOURCES", "SynthesisConfig", "SynthesisProgress", "pair_files", "synthesise_pairs",
           "write_single_pair"]
