"""Plausibility of a binary vessel mask: does its morphology match real annotated vessel trees?

ReTree kept only the generated vessel trees that a discriminator scored above 0.8. This is a
learning-free stand-in for filtering stage-1 output: a mask is put on a reference scale (128, 256 or
512 px, the largest its own resolution reaches, made as the models' training views are made), summarised
by statistics, and each statistic is compared with the range of the real annotations' training views at
that scale (DRIVE training 21-36 and CHASE_DB1 subjects 01-11, `vessel_reference.json`). Comparing at the
mask's own resolution matters: a 128 px view of a real annotation has lost its thinnest vessels and its
vessels measure wider, so it would fail against 512 px figures.
Inside the real range a statistic agrees fully; outside, agreement falls off as a Gaussian of the
distance in reference standard deviations. The score is the product of the agreements, so one
clearly implausible statistic fails a mask and several borderline ones add up.

    python -m retree_core.plausibility MASK.png [MASK2.png ...]
    python -m retree_core.plausibility --build ../shared/data    # regenerate vessel_reference.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from .data.imageio import MASK_COVERAGE, DataError, pad_to_square, read_mask
from .data import AugmentConfig, make_dataset
from .data.augment import fov_square
from .data.layouts import find_samples_many, split_samples
from .data.procedural import TreeParams, fov_disc
from .vessel_stats import to_fov_square, vessel_stats

REFERENCE_PATH = Path(__file__).with_name("vessel_reference.json")
REFERENCE_DATASETS = ("DRIVE", "CHASE_DB1")  # folders under the data root; training split only
REFERENCE_SIZES_PX = (128, 256, 512)  # the scales real annotations are summarised at
DEFAULT_THRESHOLD = 0.5  # masks scoring above this are kept
TOLERANCE_STD = 2.0  # agreement is exp(-1/2) this many reference stds outside the real range
REASON_BELOW = 0.95  # statistics agreeing less give a reason (0.95 ** 9 > 0.5: every rejection has one)
DEFAULT_FOV_MARGIN = TreeParams().fov_margin  # FOV assumed when none is given: the generator's disc
GAP_PERCENTILE = 95  # coverage: this percentile of the distance from a FOV pixel to the nearest vessel
TRUNK_SHARE = 0.1  # trunk width: mean width over this widest share of the centre line


@dataclass(frozen=True)
class Statistic:
    """One scored statistic: its name in reasons, how its values print, on which scale it varies.

    Log-scale statistics are positive and vary by ratios (areas, lengths, widths): their spread and
    distance to the real range are measured on log values. `low` / `high` say what an outlier means;
    `high=None`: values above the real range are not penalised.
    """

    key: str
    label: str
    value_format: str
    unit: str
    low: str
    high: str | None
    log_scale: bool = True

    def show(self, value: float) -> str:
        return self.value_format.format(value)


STATISTICS: tuple[Statistic, ...] = (
    Statistic("area_fraction", "vessel area", "{:.0%}", " of the FOV", "too sparse", "too dense"),
    Statistic("skeleton_length_rel", "centre-line length", "{:.1f}", " FOV diameters",
              "too little vessel network", "too much vessel network"),
    Statistic("branch_points_per_fov_diameter", "branch points", "{:.1f}", " per FOV diameter of centre line",
              "too few branchings", "too many branchings or crossings"),
    Statistic("end_points_per_fov_diameter", "vessel ends", "{:.1f}", " per FOV diameter of centre line",
              "too few vessel ends for a branching tree", "too many loose ends"),
    Statistic("largest_component_fraction", "largest connected piece", "{:.0%}", " of the vessels",
              "fragmented", None, log_scale=False),
    Statistic("width_mean_px", "mean vessel width", "{:.1f}", " px", "vessels too thin", "vessels too wide"),
    Statistic("width_spread", "vessel width spread (std / mean)", "{:.2f}", "",
              "vessels all of one width", "widths too uneven"),
    Statistic("width_trunk_px", f"trunk width (widest {TRUNK_SHARE:.0%} of the centre line)", "{:.1f}",
              " px", "no wide trunk vessels", "trunks too wide"),
    Statistic("fov_gap_fraction", f"vessel-free gaps ({GAP_PERCENTILE}th percentile distance to a vessel)",
              "{:.0%}", " of the FOV diameter", "no vessel-free areas", "vessels do not spread over the FOV"),
)


@dataclass
class Score:
    """Plausibility of one mask: value in [0, 1], reasons (worst first), the measured statistics.

    `agreement`: each scored statistic's agreement with real trees (1 inside the real range);
    `size_px`: the scale it was compared at (widths are in pixels at that scale).
    """

    value: float
    reasons: list[str]
    stats: dict
    agreement: dict[str, float] = field(default_factory=dict)
    size_px: int = REFERENCE_SIZES_PX[-1]


def reference_size(side_px: int) -> int:
    """The largest reference scale a square of side_px reaches (the smallest for tiny masks)."""
    return max([s for s in REFERENCE_SIZES_PX if s <= side_px], default=REFERENCE_SIZES_PX[0])


def canonical(mask: np.ndarray, fov: np.ndarray | None = None, size_px: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mask and FOV on a reference scale, `size_px` wide (None: the largest `reference_size` a square
    mask, or else the square around its FOV, reaches), made as the training views are: the square around
    the FOV, area-resampled and cut at MASK_COVERAGE. A square mask already at that size is measured as
    it is.

    Without a FOV the mask is taken as framed like a training view (stage-1 models draw them so):
    centred on a square, with the procedural generator's disc as its FOV.
    """
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    framed = fov is None
    if framed:
        mask = pad_to_square(mask)
        fov = fov_disc(mask.shape[0], DEFAULT_FOV_MARGIN)
    fov = np.asarray(fov).astype(bool)
    if fov.shape != mask.shape:
        raise ValueError(f"fov shape {fov.shape} differs from mask shape {mask.shape}")
    if not fov.any():
        raise ValueError("fov is empty")
    side_px = mask.shape[0] if mask.shape[0] == mask.shape[1] else fov_square(fov)[2]
    size_px = size_px or reference_size(side_px)
    if mask.shape == (size_px, size_px):
        return mask & fov, fov
    if framed:
        coverage = cv2.resize(mask.astype(np.float32), (size_px, size_px), interpolation=cv2.INTER_AREA)
        mask = coverage >= MASK_COVERAGE
        fov = fov_disc(size_px, DEFAULT_FOV_MARGIN)
        return mask & fov, fov
    return to_fov_square(mask, fov, size_px, MASK_COVERAGE)


def measure(mask: np.ndarray, fov: np.ndarray) -> dict[str, float]:
    """`vessel_stats` of a canonical, non-empty mask plus the resolution-robust ratios it is scored on.

    Counts become densities per FOV diameter of centre line. Widths along the centre line are
    summarised by their relative spread and the trunk width (the widest TRUNK_SHARE). Coverage is
    the GAP_PERCENTILE distance from a FOV pixel to the nearest vessel, in FOV diameters: a blob
    or a single line leaves large gaps.
    """
    stats: dict[str, float] = dict(vessel_stats(mask, fov))
    vessels = mask & fov
    skeleton = skeletonize(vessels)
    widths_px = np.sort(2.0 * ndimage.distance_transform_edt(vessels)[skeleton] - 1.0)
    length = stats["skeleton_length_rel"]
    fov_diameter_px = 2.0 * math.sqrt(fov.sum() / math.pi)
    to_vessel_px = ndimage.distance_transform_edt(~vessels)[fov]
    stats.update(
        branch_points_per_fov_diameter=stats["branch_points"] / length if length else 0.0,
        end_points_per_fov_diameter=stats["end_points"] / length if length else 0.0,
        width_spread=float(widths_px.std() / widths_px.mean()) if widths_px.size else 0.0,
        width_trunk_px=float(widths_px[-max(int(TRUNK_SHARE * widths_px.size), 1):].mean())
        if widths_px.size else 0.0,
        fov_gap_fraction=float(np.percentile(to_vessel_px, GAP_PERCENTILE) / fov_diameter_px),
    )
    return stats


def _scaled(value: float, log_scale: bool) -> float:
    return math.log(max(value, 1e-6)) if log_scale else value


def agreement(stat: Statistic, value: float, ref: dict) -> float:
    """1 inside the real [min, max]; outside, exp(-d^2 / 2), d the distance in TOLERANCE_STD spreads."""
    x = _scaled(value, stat.log_scale)
    below = _scaled(ref["min"], stat.log_scale) - x
    above = x - _scaled(ref["max"], stat.log_scale) if stat.high is not None else 0.0
    distance = max(below, above, 0.0) / (TOLERANCE_STD * ref["spread"])
    return math.exp(-0.5 * distance * distance)


def _reason(stat: Statistic, value: float, ref: dict, size_px: int) -> str:
    hint = stat.low if value < ref["min"] else stat.high
    return (f"{stat.label} {stat.show(value)}{stat.unit}, real trees at {size_px} px "
            f"{stat.show(ref['min'])} to {stat.show(ref['max'])}: {hint}")


@lru_cache(maxsize=1)
def load_reference(path: Path = REFERENCE_PATH) -> dict:
    """The shipped real-annotation statistics (see `build_reference`)."""
    return json.loads(Path(path).read_text())


def plausibility(mask: np.ndarray, fov: np.ndarray | None = None) -> Score:
    """How much a binary vessel mask looks like a real annotated vessel tree, with reasons.

    `fov`: field of view of the same shape; None assumes the procedural generator's centred disc.
    Each statistic clearly outside the range of real trees gives a reason, worst first.
    """
    mask, fov = canonical(mask, fov)
    size_px = mask.shape[0]
    refs = load_reference()["statistics"][str(size_px)]
    if not mask.any():
        return Score(0.0, ["no vessels"], dict(vessel_stats(mask, fov)), {s.key: 0.0 for s in STATISTICS}, size_px)
    stats = measure(mask, fov)
    agreements = {s.key: agreement(s, stats[s.key], refs[s.key]) for s in STATISTICS}
    worst_first = sorted(STATISTICS, key=lambda s: agreements[s.key])
    reasons = [_reason(s, stats[s.key], refs[s.key], size_px) for s in worst_first
               if agreements[s.key] < REASON_BELOW]
    value = float(np.clip(np.prod(list(agreements.values())), 0.0, 1.0))
    return Score(value, reasons, stats, agreements, size_px)


def filter_trees(masks: Iterable[np.ndarray], threshold: float = DEFAULT_THRESHOLD
                 ) -> list[tuple[int, Score]]:
    """(index, score) of the masks scoring above `threshold`, in input order."""
    scored = ((i, plausibility(mask)) for i, mask in enumerate(masks))
    return [(i, score) for i, score in scored if score.value > threshold]


def _summary(values: np.ndarray, log_scale: bool) -> dict:
    """mean, std, min, max, median, and the spread scoring uses (std of logs on a log scale)."""
    scaled = np.log(np.maximum(values, 1e-6)) if log_scale else values
    summary = {"mean": values.mean(), "std": values.std(ddof=1), "min": values.min(), "max": values.max(),
               "median": np.median(values), "spread": scaled.std(ddof=1)}
    return {"scale": "log" if log_scale else "linear"} | {k: float(f"{v:.6g}") for k, v in summary.items()}


def reference_roots(data_root: str | Path) -> list[Path]:
    """The REFERENCE_DATASETS folders under `data_root` that are there."""
    return [Path(data_root) / name for name in REFERENCE_DATASETS if (Path(data_root) / name).is_dir()]


def build_reference(data_root: str | Path) -> dict:
    """Statistics of real annotations, training split only (the fixed validation split is never read).

    DRIVE and CHASE_DB1 (first observer) under `data_root`, whichever are there; at each reference
    scale the annotations are measured as the models see them and as a generated tree is scored: the
    unaugmented training views, with no FOV given (see `canonical`), summarised per scale and statistic.
    """
    roots = reference_roots(data_root)
    train, _ = split_samples(find_samples_many(roots))
    if len(train) < 2:
        raise DataError(f"{data_root}: fewer than 2 training annotations in {' / '.join(REFERENCE_DATASETS)}")
    measured: dict[int, list[dict]] = {}
    for size in REFERENCE_SIZES_PX:
        views = make_dataset(roots, size, AugmentConfig(enabled=False), split="train")
        items = (views[i] for i in range(len(views)))
        measured[size] = [measure(*canonical(item["mask"][0].numpy() > 0)) for item in items]
    images: dict[str, list[str]] = {}
    for sample in train:
        dataset, name = sample.name.split("/", 1)
        images.setdefault(dataset, []).append(name)
    return {
        "what": "statistics of real expert vessel annotations, for retree_core.plausibility",
        "sizes_px": list(REFERENCE_SIZES_PX),
        "resizing": f"the training views at each size (square around the FOV, area-resampled, a vessel pixel "
                    f"kept where >= {MASK_COVERAGE:.0%} covered), scored as framed (no FOV given)",
        "annotations": "DRIVE 1st_manual, CHASE_DB1 1st_label (first human observer)",
        "split": "training only; the validation split (DRIVE 37-40, CHASE_DB1 12-14) is not used",
        "count": len(train),
        "images": images,
        "statistics": {str(size): {s.key: _summary(np.array([m[s.key] for m in rows]), s.log_scale)
                                   for s in STATISTICS} for size, rows in measured.items()},
    }


def _print_score(name: str, score: Score, threshold: float) -> None:
    verdict = "kept" if score.value > threshold else "rejected"
    print(f"{name}: {score.value:.3f} ({verdict}, compared with real trees at {score.size_px} px)")
    for reason in score.reasons or ["all statistics within the range of real trees"]:
        print(f"  - {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retree_core.plausibility",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("masks", nargs="*", type=Path, help="vessel mask image files to score")
    parser.add_argument("--build", type=Path, metavar="DATA_ROOT",
                        help="regenerate the reference from DATA_ROOT/DRIVE and DATA_ROOT/CHASE_DB1")
    parser.add_argument("--out", type=Path, default=REFERENCE_PATH, help="where --build writes")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args(argv)
    if args.build is None and not args.masks:
        parser.error("give mask files to score, or --build DATA_ROOT")
    if args.build is not None:
        reference = build_reference(args.build)
        args.out.write_text(json.dumps(reference, indent=1) + "\n")
        load_reference.cache_clear()
        print(f"{args.out}: {reference['count']} training annotations at {reference['sizes_px']} px")
    failed = 0
    for path in args.masks:
        try:
            _print_score(str(path), plausibility(read_mask(path)), args.threshold)
        except (DataError, ValueError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
