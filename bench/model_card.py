"""Figures and picture for weights/README.md: each fundus model on the validation split, with the fast
default sampler and with the paper's 1000-step DDPM, on the same masks and seeds.

Prints one Markdown row per (model, sampler): mask fidelity (Dice between the mask and the vessels the
--segmenter finds in the generated image, inside the FOV), the same Dice on the real photograph (the
ceiling that segmenter allows at this size), KID against the real validation images, the pixel-scale
grain of the generated and the real images (realism.grain), and wall time.
Writes a grid (rows: validation masks; columns: mask, one generated image per model, the real image).

    python bench/model_card.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 \\
        [--models concat spade] [--settings dpmpp:20 dpmpp:20:3 ddpm:1000] [--out outputs/model_card] \\
        [--segmenter classical|segment] [--sr none|auto] [--no_aperture]

A setting is sampler:steps[:guidance] (guidance 1, plain conditional, when left out).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.config import SampleConfig  # noqa: E402
from retree_core.evaluate import GenerationOptions, evaluate_generator, load_segmenter  # noqa: E402
from retree_core.images import grid, save_png  # noqa: E402
from retree_core.pipeline import FundusPipeline  # noqa: E402

GRID_ROWS = 6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", nargs="+", required=True)
    p.add_argument("--models", nargs="+", default=["concat", "spade"], help="weights names or paths")
    p.add_argument("--settings", nargs="+", default=["dpmpp:20", "ddpm:1000"], help="sampler:steps[:guidance]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--segmenter", default="classical", help="finds the vessels: classical, segment or a path")
    p.add_argument("--sr", default="none", help="super-resolve before scoring: none, auto or a model")
    p.add_argument("--no_aperture", dest="aperture", action="store_false",
                   help="score the images as generated, without the round aperture")
    p.add_argument("--out", default="outputs/model_card", help="per-run metrics.csv/json go here")
    p.add_argument("--grid", default="assets/validation_grid.png", help="picture of the first setting")
    args = p.parse_args()

    segmenter = load_segmenter(args.segmenter)
    print("| model | sampler | steps | guidance | mask fidelity (Dice) | Dice on the real image | KID "
          "| grain (generated / real, grey levels) | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    columns: dict[str, np.ndarray] = {}
    for model in args.models:
        pipe = FundusPipeline.load(model, sr=args.sr, aperture=args.aperture)
        for setting in args.settings:
            sampler, steps, guidance = (setting.split(":") + ["1"])[:3]
            options = GenerationOptions(SampleConfig(sampler, int(steps), float(guidance), args.seed))
            tic = time.perf_counter()
            report = evaluate_generator(pipe, args.data_root, segmenter, "val", options)
            seconds = time.perf_counter() - tic
            report.save(Path(args.out) / f"{Path(model).stem}_{sampler}{steps}_g{guidance}")
            mean, kid = report.mean(), report.summary["kid"]
            print(f"| {model} | {sampler} | {steps} | {float(guidance):g} | {mean['fidelity_dice']:.3f} | {mean['real_image_dice']:.3f} "
                  f"| {kid['mean']:.4f} ± {kid['std']:.4f} ({kid['num_generated']} vs {kid['num_real']}) "
                  f"| {mean['grain']:.2f} / {mean['real_grain']:.2f} | {seconds:.0f} |", flush=True)
            if setting == args.settings[0]:
                columns.setdefault("mask", report.arrays["mask"])
                columns.setdefault("real", report.arrays["real"])
                columns[Path(model).stem] = report.arrays["generated"]
    order = ["mask", *[Path(m).stem for m in args.models], "real"]
    rows = [np.stack([columns[c][i] for c in order]) for i in range(min(GRID_ROWS, len(columns["mask"])))]
    print(f"wrote {save_png(args.grid, grid(rows))} (columns: {', '.join(order)}; {args.settings[0]})")


if __name__ == "__main__":
    main()
