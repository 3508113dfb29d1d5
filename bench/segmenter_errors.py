"""Where a vessel segmenter goes wrong on the validation photographs: its F1 at its own threshold and at the
best threshold for these images (is the threshold what holds it back?), and its false positives split into
those beside an annotated vessel (too wide), those in the rim of the field of view, and the rest.

    python bench/segmenter_errors.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 \\
        --segmenters outputs/study/arm_synthetic_spade/segment.safetensors segment [--split val]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from retree_core.data import estimate_fov, split_sample_list  # noqa: E402
from retree_core.data.layouts import load_sample  # noqa: E402
from retree_core.evaluate import load_segmenter, resize_map  # noqa: E402
from retree_core.segmentation import THRESHOLDS  # noqa: E402

BESIDE_PX = 2  # a false positive this close to an annotated vessel counts as width
RIM_SHARE = 0.04  # of the image's side: the field of view's outer band


def errors(segmenter, samples) -> dict[str, float]:
    """Per-image mean F1 at the segmenter's threshold and at each of THRESHOLDS; false positives' shares."""
    f1 = np.zeros(len(THRESHOLDS) + 1)
    beside = rim = other = 0
    for sample in samples:
        image, truth, fov = load_sample(sample)
        fov = estimate_fov(image) if fov is None else fov
        truth = truth.astype(bool) & fov
        prob = resize_map(segmenter(image, fov), truth.shape)
        for i, t in enumerate([segmenter.threshold, *THRESHOLDS]):
            found = (prob > t) & fov
            f1[i] += 2 * (found & truth).sum() / max(found.sum() + truth.sum(), 1) / len(samples)
        false = (prob > segmenter.threshold) & fov & ~truth
        near = false & (ndimage.distance_transform_edt(~truth) <= BESIDE_PX)
        at_rim = false & ~near & (ndimage.distance_transform_edt(fov) < RIM_SHARE * min(fov.shape))
        beside, rim, other = beside + near.sum(), rim + at_rim.sum(), other + (false & ~near & ~at_rim).sum()
    total = max(beside + rim + other, 1)
    best = int(np.argmax(f1[1:]))
    return {"f1": f1[0], "best_f1": f1[1 + best], "best_threshold": float(THRESHOLDS[best]),
            "beside": beside / total, "rim": rim / total, "other": other / total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", nargs="+", required=True)
    p.add_argument("--segmenters", nargs="+", required=True, help="names or paths (evaluate --segmenter)")
    p.add_argument("--split", default="val")
    args = p.parse_args()
    samples = split_sample_list(args.data_root, args.split)
    print(f"{len(samples)} {args.split} images; false positives: beside a vessel (<= {BESIDE_PX} px), in the "
          f"FOV's outer {RIM_SHARE:.0%}, elsewhere\n")
    print("| segmenter | threshold | F1 | best threshold here | F1 there | beside | rim | elsewhere |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.segmenters:
        segmenter = load_segmenter(name)
        e = errors(segmenter, samples)
        print(f"| {name} | {segmenter.threshold:.2f} | {e['f1']:.3f} | {e['best_threshold']:.2f} | "
              f"{e['best_f1']:.3f} | {e['beside']:.0%} | {e['rim']:.0%} | {e['other']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
