"""An experiment for the synthetic-data study: stage-1 trees as `generate --num` dreams them (filtered,
mended, cut at 512 px), redrawn narrower from their centre line, written as mask files for
`generate --masks`. Prints the trees' median vessel area and mean width before and after.

    python bench/narrow_trees.py --num 100 --shrink_px 1.0 --out outputs/narrow_masks
    python -m retree_core generate --mode spade --masks outputs/narrow_masks --seed 0 --sr auto \\
        --output_dir outputs/study_narrow/synthetic_spade
    python bench/synthetic_study.py ... --sources spade --out outputs/study_narrow   # uses those pairs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import skeletonize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.images import save_png  # noqa: E402
from retree_core.pipeline import dream_trees  # noqa: E402
from retree_core.plausibility import DEFAULT_THRESHOLD, canonical  # noqa: E402
from retree_core.vessel_stats import vessel_stats  # noqa: E402
from retree_core.weights import load_model  # noqa: E402


def narrow(tree: np.ndarray, shrink_px: float, min_radius_px: float = 0.5) -> np.ndarray:
    """The tree redrawn from its centre line, each point a disc of its radius less `shrink_px`."""
    centre = skeletonize(tree)
    radius = np.maximum(ndimage.distance_transform_edt(tree)[centre] - 0.5 - shrink_px, min_radius_px)
    radius = np.round(radius * 2) / 2
    ys, xs = np.nonzero(centre)
    out = np.zeros(tree.shape, np.uint8)
    for r in np.unique(radius):
        points = np.zeros_like(out)
        points[ys[radius == r], xs[radius == r]] = 1
        k = int(r)
        yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
        out |= cv2.dilate(points, (yy ** 2 + xx ** 2 <= r * r).astype(np.uint8))
    return out.astype(bool)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size_px", type=int, default=512)
    p.add_argument("--shrink_px", type=float, default=1.0, help="vessel widths less twice this")
    p.add_argument("--out", default="outputs/narrow_masks")
    args = p.parse_args()
    model = load_model("vessel", role="vessel")
    trees, _ = dream_trees(model, list(range(args.seed, args.seed + args.num)), min_plausibility=DEFAULT_THRESHOLD,
                           size_px=args.size_px, steps=20)
    trees = [t for t in trees if t is not None]
    thin = [narrow(t, args.shrink_px) for t in trees]
    for name, group in (("dreamt", trees), ("narrowed", thin)):
        stats = [vessel_stats(*canonical(t, None, args.size_px)) for t in group]
        print(f"{name}: {len(group)} trees, median vessel area {np.median([s['area_fraction'] for s in stats]):.1%}, "
              f"mean width {np.median([s['width_mean_px'] for s in stats]):.2f} px")
    for i, t in enumerate(thin):
        save_png(Path(args.out) / f"tree_{i:04d}.png", t.astype(np.uint8) * 255)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
