"""Training pairs as tensors: preloaded, pre-shrunk triples viewed through seeded augmentation.

Items are addressed by (index, seed): the augmentation of an item is a pure function of that pair, so
a resumed run that replays the same seeds sees exactly the same data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import AugmentConfig, augment, photometric
from .embedded import embedded_example, estimate_fov
from ..images import from_uint8
from .imageio import DataError, mask_at
from .layouts import Sample, Triple, find_samples_many, load_samples, split_samples
from .procedural import TreeParams, fov_disc, procedural_tree

PRELOAD_MARGIN = 1.25  # preloaded shorter side / output size: room for zoom and rotation, little memory
SPLITS = ("train", "val", "all")


def item_key(key: int | tuple[int, int], length: int) -> tuple[int, int]:
    """(index, seed) of a dataset key (an index alone uses itself as the seed), the index checked."""
    index, seed = (key, key) if isinstance(key, (int, np.integer)) else key
    index, seed = int(index), int(seed)
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return index, seed


def preload(triple: Triple, size_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8, mask coverage uint8 0-255, fov coverage uint8) with shorter side ~1.25 * size_px.

    Masks are area-resampled to coverage rather than re-binarised, so thin vessels survive until the
    final warp cuts them at MASK_COVERAGE. A missing FOV is estimated from the photograph.
    """
    image, mask, fov = triple
    fov = estimate_fov(image) if fov is None else fov
    factor = PRELOAD_MARGIN * size_px / min(image.shape[:2])
    planes = [image, mask.astype(np.uint8) * 255, fov.astype(np.uint8) * 255]
    if factor < 1.0:
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        planes = [cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in planes]
    return tuple(np.ascontiguousarray(p) for p in planes)


class PairDataset(Dataset):
    """(image, mask, fov) training pairs; item (index, seed) -> dict of tensors at size_px.

    `image` float32 3xSxS in [-1, 1], `mask` float32 1xSxS (vessel +1, background -1), `fov` float32
    1xSxS in {0, 1}, `name` str. `length` larger than the number of triples cycles through them (a
    virtual epoch: one image seen through many augmentations). With `crop_px`, S is crop_px: a random
    square of the size_px view (patch training).
    """

    def __init__(self, triples: Sequence[Triple], names: Sequence[str], size_px: int,
                 augment_cfg: AugmentConfig | None = None, length: int | None = None,
                 preloaded: bool = False, crop_px: int | None = None) -> None:
        if len(triples) != len(names) or not triples:
            raise ValueError(f"need one name per triple and at least one triple "
                             f"({len(triples)} triples, {len(names)} names)")
        if crop_px is not None and not 0 < crop_px <= size_px:
            raise ValueError(f"crop_px {crop_px} must be between 1 and the image size {size_px}")
        self.size_px, self.crop_px = size_px, crop_px
        self.augment_cfg = augment_cfg
        self.names = list(names)
        self.triples = list(triples) if preloaded else [preload(t, size_px) for t in triples]
        self.length = len(self.triples) if length is None else length

    @classmethod
    def from_samples(cls, samples: Sequence[Sample], size_px: int, augment_cfg: AugmentConfig | None = None,
                     crop_px: int | None = None) -> PairDataset:
        """Read, check and preload dataset samples; one DataError lists every bad file."""
        triples = load_samples(list(samples), lambda triple: preload(triple, size_px))
        return cls(triples, [s.name for s in samples], size_px, augment_cfg, preloaded=True, crop_px=crop_px)

    @classmethod
    def embedded(cls, size_px: int, augment_cfg: AugmentConfig | None = None,
                 length: int = 64, crop_px: int | None = None) -> PairDataset:
        """The built-in retina photograph seen through `length` augmentations per epoch."""
        return cls([embedded_example()], ["skimage-retina"], size_px, augment_cfg, length, crop_px=crop_px)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | str]:
        index, seed = item_key(key, self.length)
        which = index % len(self.triples)
        image, mask, fov = self.triples[which]
        rng = np.random.default_rng([seed & (2**63 - 1), index])
        image, mask, fov = augment(image, mask, fov, self.size_px, rng, self.augment_cfg)
        if self.crop_px is not None:
            top, left = rng.integers(0, self.size_px - self.crop_px + 1, size=2)
            window = np.s_[top:top + self.crop_px, left:left + self.crop_px]
            image, mask, fov = image[window], mask[window], fov[window]
        if self.augment_cfg is not None and self.augment_cfg.photometric_on:  # its own stream: crops unchanged
            image = photometric(image, mask, fov, self.size_px, np.random.default_rng([seed & (2**63 - 1), index, 3]),
                                self.augment_cfg)
        return {
            "image": from_uint8(image),
            "mask": torch.from_numpy(np.where(mask, 1.0, -1.0).astype(np.float32)[None]),
            "fov": torch.from_numpy(fov.astype(np.float32)[None]),
            "name": self.names[which],
        }


class MixedDataset(Dataset):
    """Real and synthetic pairs in one dataset: item (index, seed) comes from `synthetic` with probability
    `fraction` (a pure function of the pair, like the augmentation), else from `real`."""

    def __init__(self, real: PairDataset, synthetic: PairDataset, fraction: float) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"synthetic fraction {fraction} must be between 0 and 1")
        self.real, self.synthetic, self.fraction = real, synthetic, fraction

    def __len__(self) -> int:
        return len(self.real) + len(self.synthetic)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | str]:
        index, seed = item_key(key, len(self))
        rng = np.random.default_rng([seed & (2**63 - 1), index, 1])
        pool = self.synthetic if rng.random() < self.fraction else self.real
        return pool[(int(rng.integers(len(pool))), seed)]


class ProceduralTrees(Dataset):
    """Procedural vessel trees as training items for the vessel model, drawn on the fly.

    Item (index, seed) is a tree with randomised anatomy (eye, disc position, trunk and branch counts,
    tortuosity, width), a pure function of the pair, rendered at RENDER_PX and reduced to size_px as a
    real annotation is (area-resampled, cut at MASK_COVERAGE). Its FOV is the generator's disc and its
    image black: the vessel model learns the masks only.
    """

    RENDER_PX = 512

    def __init__(self, size_px: int, length: int = 1000) -> None:
        self.size_px, self.length = size_px, length
        self.fov = fov_disc(size_px, TreeParams().fov_margin)

    def __len__(self) -> int:
        return self.length

    def params(self, rng: np.random.Generator) -> TreeParams:
        eye = str(rng.choice(["left", "right"]))
        x = (0.25 if eye == "left" else 0.75) + rng.uniform(-0.05, 0.05)
        return TreeParams(main_vessels=int(rng.integers(3, 6)), nasal_vessels=int(rng.integers(1, 4)),
                          macular_vessels=int(rng.integers(1, 4)), depth=int(rng.integers(4, 7)),
                          tortuosity=float(rng.uniform(0.2, 0.8)), width_px=float(rng.uniform(7.0, 11.0)),
                          disc_xy=(x, 0.5 + rng.uniform(-0.06, 0.06)), eye=eye)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | str]:
        index, seed = item_key(key, self.length)
        rng = np.random.default_rng([seed & (2**63 - 1), index, 2])
        tree = procedural_tree(self.RENDER_PX, self.params(rng), seed=int(rng.integers(2**31)))
        mask = mask_at(tree, self.size_px) & self.fov
        return {
            "image": torch.full((3, self.size_px, self.size_px), -1.0),
            "mask": torch.from_numpy(np.where(mask, 1.0, -1.0).astype(np.float32)[None]),
            "fov": torch.from_numpy(self.fov.astype(np.float32)[None]),
            "name": f"procedural/{index}",
        }


def make_dataset(data_roots: Sequence[str | Path] | str | Path | None, size_px: int,
                 augment_cfg: AugmentConfig | None = None, split: str = "train",
                 crop_px: int | None = None) -> PairDataset:
    """The dataset a run trains or validates on: data folders if given, else the embedded example.

    `split` picks the fixed train or validation part (see `layouts.DEFAULT_VAL`) or all of it. Without
    `augment_cfg`, training splits augment and validation does not. Every sample of the split is read
    and checked before this returns, so bad data fails here with one message, not mid-run.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if augment_cfg is None:
        augment_cfg = AugmentConfig(enabled=split != "val")
    if isinstance(data_roots, (str, Path)):
        data_roots = [data_roots]
    if not data_roots:
        return PairDataset.embedded(size_px, augment_cfg, length=1 if split == "val" else 64, crop_px=crop_px)
    return PairDataset.from_samples(split_sample_list(data_roots, split), size_px, augment_cfg, crop_px)


def split_sample_list(data_roots: Sequence[str | Path], split: str) -> list[Sample]:
    """The checked samples of one split ("train", "val" or "all"; see layouts.DEFAULT_VAL)."""
    samples = find_samples_many(data_roots)
    train, val = split_samples(samples)
    chosen = {"train": train, "val": val, "all": samples}[split]
    if not chosen:
        raise DataError(f"no {split} samples in {', '.join(map(str, data_roots))}: the fixed validation "
                        "split holds DRIVE images 37-40 and CHASE_DB1 subjects 12-14 only (try split all)")
    return chosen
