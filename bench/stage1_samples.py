"""How far is a stage-1 vessel model from real trees? Samples trees and scores them as the filter does.

For each model (a weights name, .safetensors or a training .ckpt) it draws one tree per seed and prints,
per tree and as medians, the plausibility score and the statistics that fail most often (largest
connected piece, vessel area, loose ends), beside the range of the real training annotations at the
same size (`retree_core/vessel_reference.json`), and the share of trees the filter keeps; at --out_px also
with thin vessels grown on (`twigs.py`). Optionally writes a grid of the trees. With --data_root it also
measures the training target itself: each real annotation of --split at the model's size, as the soft
tree it learns, made a tree at --out_px as its outputs are (the best a model imitating that target can reach
there), with its Dice against the annotation. Trees at --out_px come from the treesr model (--tree_sr, as
`generate` makes them) or, without one, from the soft output resized and cut.

    python bench/stage1_samples.py vessel [runs/vessel/last.ckpt ...] [--num 16] [--sampler dpmpp] \\
        [--steps 20] [--threshold 0.5] [--grid outputs/stage1.png] [--cut_only] [--data_root ../shared/data] \\
        [--tree_sr auto|none|NAME] [--split train|val]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.images import grid, save_png  # noqa: E402
from retree_core.pipeline import generate, vessel_masks  # noqa: E402
from retree_core.data import AugmentConfig, make_dataset, mask_at  # noqa: E402
from retree_core.tree_ops import soft_trees  # noqa: E402
from retree_core.tree_sr import with_tree_sr  # noqa: E402
from retree_core.twigs import add_twigs  # noqa: E402
from retree_core.plausibility import (DEFAULT_THRESHOLD, STATISTICS, canonical, load_reference, plausibility,  # noqa: E402
                                      reference_roots)
from retree_core.vessel_stats import vessel_stats  # noqa: E402
from retree_core.weights import load_model  # noqa: E402

SHOWN = {"largest_component_fraction": "largest piece", "area_fraction": "vessel area",
         "end_points_per_fov_diameter": "ends per FOV diam.", "width_spread": "width spread"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="vessel models: weights name, .safetensors or .ckpt")
    p.add_argument("--num", type=int, default=16, help="trees per model (seeds 0..num-1)")
    p.add_argument("--sampler", default="dpmpp")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--grid", default=None, help="PNG with the trees at --out_px, rows per model: (with a treesr "
                   "model) the soft output resized and cut, the trees as made, then with thin vessels grown on")
    p.add_argument("--grid_trees", type=int, default=4, help="trees per row of the grid")
    p.add_argument("--out_px", type=int, default=512, help="also measure the trees at this output size: cut from "
                   "the soft output resized there (as generate and the app make them) and the model-size cut enlarged")
    p.add_argument("--cut_only", action="store_true", help="cut at 0 only: breaks not mended, specks kept "
                   "(tree_ops.cut_tree)")
    p.add_argument("--data_root", default=None, help="folder holding DRIVE and CHASE_DB1: also measure the "
                   "soft-tree target of their --split annotations")
    p.add_argument("--split", choices=("train", "val"), default="train", help="whose annotations --data_root "
                   "measures (a treesr model learnt from the training ones)")
    p.add_argument("--tree_sr", default="auto", help="treesr model making the --out_px trees (auto: the shipped "
                   "one, none: the soft output resized and cut)")
    p.add_argument("--soft_tree_px", type=float, default=1.5, help="the target's --soft_tree_px (the shipped "
                   "model's, as the card's training command gives it)")
    args = p.parse_args()
    refine = not args.cut_only

    stats = {s.key: s for s in STATISTICS}
    rows = []
    for source in args.models:
        model = with_tree_sr(load_model(source, role="vessel"), args.tree_sr)
        size = model.net_cfg.image_size
        tic = time.perf_counter()
        raw = generate(model, None, list(range(args.num)), sampler=args.sampler, steps=args.steps)
        trees = vessel_masks(raw, refine=refine)
        seconds = time.perf_counter() - tic
        scores = [plausibility(tree) for tree in trees]
        ref = load_reference()["statistics"][str(scores[0].size_px)]
        print(f"\n{source}: {model.trained_steps:,} training steps, {size} px, {args.num} trees "
              f"({args.sampler} {args.steps} steps, {seconds:.1f} s); real trees at {scores[0].size_px} px:")
        print("  " + "; ".join(f"{stats[k].label} {stats[k].show(ref[k]['min'])} to {stats[k].show(ref[k]['max'])}"
                               for k in SHOWN))
        print(f"  {'seed':>4} {'score':>6} " + " ".join(f"{h:>18}" for h in SHOWN.values()))
        for seed, score in enumerate(scores):
            print(f"  {seed:>4} {score.value:6.2f} " + " ".join(f"{stats[k].show(score.stats[k]):>18}" for k in SHOWN))
        medians = {k: float(np.median([s.stats[k] for s in scores])) for k in SHOWN}
        kept = sum(s.value >= args.threshold for s in scores)  # as pipeline.dream_trees keeps them
        print(f"  median {np.median([s.value for s in scores]):.2f} "
              + " ".join(f"{stats[k].show(medians[k]):>18}" for k in SHOWN))
        print(f"  kept by the filter (score >= {args.threshold}): {kept} of {args.num}")
        real = load_reference()["statistics"][str(args.out_px)]
        made = "by " + model.tree_sr.source if model.tree_sr else "soft output resized"
        final = vessel_masks(raw, args.out_px, refine, model.tree_sr)
        twigged = np.stack([add_twigs(t, seed) for seed, t in enumerate(final)])
        for label, big in ((made, final), (made + ", thin vessels grown on (twigs.py)", twigged),
                           ("model-size cut enlarged", np.stack([mask_at(t, args.out_px) for t in trees]))):
            print_at_size(label, big, args.out_px, real)
        if args.data_root:
            target_at_size(args.data_root, size, args.out_px, real, refine, args.soft_tree_px, args.split,
                           model.tree_sr)
        shown = [vessel_masks(raw[:args.grid_trees], args.out_px, refine)] if args.grid and model.tree_sr else []
        for row in shown + [final[:args.grid_trees], twigged[:args.grid_trees]]:  # treesr's below the cut, twigs last
            rows.append(np.repeat(row[:, :, :, None].astype(np.uint8) * 255, 3, axis=3))
    if args.grid:
        print(f"\ngrid: {save_png(args.grid, grid(rows))}")


def print_at_size(label: str, trees: np.ndarray, size_px: int, real: dict, annotations=None) -> None:
    measured = [vessel_stats(*canonical(t, None, size_px)) for t in trees]
    length = np.median([m["skeleton_length_rel"] for m in measured])
    line = (f"  at {size_px} px, {label}: median vessel area {np.median([m['area_fraction'] for m in measured]):.1%}, "
            f"mean width {np.median([m['width_mean_px'] for m in measured]):.2f} px, centre line {length:.1f} FOV "
            f"diameters (real {real['area_fraction']['median']:.1%}, {real['width_mean_px']['median']:.2f} px, "
            f"{real['skeleton_length_rel']['median']:.1f})")
    if annotations is not None:
        dice = [2 * (t & a).sum() / (t.sum() + a.sum()) for t, a in zip(trees, annotations)]
        line += f"; Dice with the annotation {np.median(dice):.3f}"
    print(line)


def target_at_size(data_root: str, size_px: int, out_px: int, real: dict, refine: bool, soft_px: float,
                   split: str, tree_sr=None) -> None:
    roots = reference_roots(data_root)
    small, big = (make_dataset(roots, px, AugmentConfig(enabled=False), split=split) for px in (size_px, out_px))
    masks = torch.stack([small[i]["mask"] for i in range(len(small))])
    soft = soft_trees(masks, soft_px)
    annotations = np.stack([big[i]["mask"][0].numpy() > 0 for i in range(len(big))])
    made = f", made by {tree_sr.source}" if tree_sr else ""
    print_at_size(f"the target of {len(small)} real {split} annotations{made}",
                  vessel_masks(soft, out_px, refine, tree_sr), out_px, real, annotations)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
