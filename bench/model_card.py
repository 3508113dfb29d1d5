"""Figures and picture for weights/README.md: each fundus model on the validation split, with the fast
default sampler and with the paper's 1000-step DDPM, on the same masks and seeds.

Prints one Markdown row per (model, sampler): mask fidelity (Dice between the mask and the vessels the
--segmenter finds in the generated image, inside the FOV), the same Dice on the real photograph (the
ceiling that segmenter allows at this size), KID against the real validation images, the pixel-scale
grain of the generated and the real images (realism.grain), and wall time.
Writes a grid (rows: validation masks; columns: mask, one generated image per model, the real image).

    python bench/model_card.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 \\
        [--models concat spade] [--settings dpmpp:20 dpmpp:20:3 ddpm:1000] [--out outputs/model_card] \\
        [--segmenter classical|segment] [--sr none|auto] [--no_aperture] [--by_style] [--repeats N] [--match_styles]
        [--real_floor DRAWS] [--grain]

A setting is sampler:steps[:guidance] (guidance 1, plain conditional, when left out; "recommended": the
model's scale for each style, as the app and `generate` use it). --by_style scores
each data root on its own, in the model's style of that name (its folder name) where the model has one,
else "any"; --repeats N generates every validation mask with N seeds (seed, seed + 1000, ...) and gives
the mean over them, KID with its spread across the repeats. --real_floor D adds, for scale, a row per data
group: D random sets of real training photographs, as many as the validation ones, scored like a model's images
(what a generator that drew the training photographs themselves would score against this small validation set).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.config import SampleConfig  # noqa: E402
from retree_core.data import AugmentConfig, make_dataset  # noqa: E402
from retree_core.evaluate import GenerationOptions, evaluate_generator, load_segmenter, scales  # noqa: E402
from retree_core.images import grid, save_png, to_uint8  # noqa: E402
from retree_core.pipeline import FundusPipeline  # noqa: E402
from retree_core.realism import inception_features, kid  # noqa: E402

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
    p.add_argument("--grain", action="store_true", help="with the camera grain the sr model lacks (generate --grain)")
    p.add_argument("--out", default="outputs/model_card", help="per-run metrics.csv/json go here")
    p.add_argument("--grid", default="assets/validation_grid.png", help="picture of the first setting")
    p.add_argument("--by_style", action="store_true", help="score each data root alone, in its style")
    p.add_argument("--repeats", type=int, default=1, help="seeds per validation mask")
    p.add_argument("--match_styles", action="store_true", help="each validation image in its own dataset's "
                   "style where the model has it (evaluate --style match)")
    p.add_argument("--real_floor", type=int, default=0, metavar="DRAWS",
                   help="also score DRAWS sets of real training photographs per data group (0: not)")
    args = p.parse_args()

    segmenter = load_segmenter(args.segmenter)
    print("| model | data (style) | sampler | steps | guidance | mask fidelity (Dice) | Dice on the real image | KID "
          "| grain (generated / real, grey levels) | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    columns: dict[str, np.ndarray] = {}
    for model in args.models:
        pipe = FundusPipeline.load(model, sr=args.sr, aperture=args.aperture, grain=args.grain)
        if args.real_floor and model == args.models[0]:  # at the size the models' images are scored
            for roots in [[root] for root in args.data_root] if args.by_style else [args.data_root]:
                tic = time.perf_counter()
                mean, spread, count = real_floor(roots, pipe.output_px, args.real_floor, args.seed)
                print(f"| real training photographs | {'+'.join(Path(r).name for r in roots)} | - | - | - | - | - "
                      f"| {mean:.4f} ± {spread:.4f} over {args.real_floor} draws ({count} vs {count}) | - | "
                      f"{time.perf_counter() - tic:.0f} |", flush=True)
        groups = [([root], style_for(pipe, root)) for root in args.data_root] if args.by_style else \
            [(args.data_root, "any")]
        for setting in args.settings:
            sampler, steps, guidance = (setting.split(":") + ["1"])[:3]
            scale = None if guidance == "recommended" else float(guidance)
            for roots, style in groups:
                tic = time.perf_counter()
                reports = []
                for repeat in range(args.repeats):
                    options = GenerationOptions(SampleConfig(sampler, int(steps), scale,
                                                             args.seed + 1000 * repeat, style),
                                                match_styles=args.match_styles)
                    reports.append(evaluate_generator(pipe, roots, segmenter, "val", options))
                    data = "+".join(Path(r).name for r in roots)
                    reports[-1].save(Path(args.out) / f"{Path(model).stem}_{data}_{style}_{sampler}{steps}_g{guidance}"
                                                      f"_r{repeat}")
                seconds = time.perf_counter() - tic
                report = reports[0]
                fid, real = (np.mean([r.mean()[k] for r in reports]) for k in ("fidelity_dice", "real_image_dice"))
                grain, real_grain = (np.mean([r.mean()[k] for r in reports]) for k in ("grain", "real_grain"))
                kids = [r.summary["kid"] for r in reports]
                spread = (f"{np.std([k['mean'] for k in kids]):.4f} over {len(kids)} repeats" if len(kids) > 1
                          else f"{kids[0]['std']:.4f}")
                shown = "matched" if args.match_styles and pipe.model.net_cfg.styles else style
                used = scales({row["style"]: row["guidance"] for row in report.rows})
                print(f"| {model} | {data} ({shown}) | {sampler} | {steps} | {used} | {fid:.3f} | {real:.3f} "
                      f"| {np.mean([k['mean'] for k in kids]):.4f} ± {spread} ({kids[0]['num_generated']} vs "
                      f"{kids[0]['num_real']}) | {grain:.2f} / {real_grain:.2f} | {seconds:.0f} |", flush=True)
            if setting == args.settings[0]:
                columns.setdefault("mask", report.arrays["mask"])
                columns.setdefault("real", report.arrays["real"])
                columns[Path(model).stem] = report.arrays["generated"]
    order = ["mask", *[Path(m).stem for m in args.models], "real"]
    rows = [np.stack([columns[c][i] for c in order]) for i in range(min(GRID_ROWS, len(columns["mask"])))]
    print(f"wrote {save_png(args.grid, grid(rows))} (columns: {', '.join(order)}; {args.settings[0]})")


def real_floor(roots: list[str], size_px: int, draws: int, seed: int) -> tuple[float, float, int]:
    """KID of `draws` random sets of training photographs, each as many as the validation photographs,
    against those (at `size_px`, as a model's images are scored): (mean, std over draws, set size)."""
    features = {split: inception_features(photographs(roots, split, size_px)[0]) for split in ("train", "val")}
    count, rng = len(features["val"]), np.random.default_rng(seed)
    if len(features["train"]) < count:
        raise SystemExit(f"--real_floor: {len(features['train'])} training photographs, fewer than the {count} "
                         "validation ones")
    values = [kid(features["train"][rng.choice(len(features["train"]), count, replace=False)], features["val"]).mean
              for _ in range(draws)]
    return float(np.mean(values)), float(np.std(values)), count


def photographs(roots: list[str], split: str, size_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A split's uint8 photographs (B, S, S, 3), bool annotations and FOVs (B, S, S) at `size_px`, unaugmented."""
    dataset = make_dataset(roots, size_px, AugmentConfig(enabled=False), split=split)
    items = [dataset[i] for i in range(len(dataset))]
    return (to_uint8(torch.stack([item["image"] for item in items])),
            np.stack([item["mask"][0].numpy() > 0 for item in items]),
            np.stack([item["fov"][0].numpy() > 0.5 for item in items]))


def style_for(pipe: FundusPipeline, root: str) -> str:
    """The model's style named like the data root's folder, else "any"."""
    name = Path(root).resolve().name
    return name if name in pipe.styles else "any"


if __name__ == "__main__":
    main()
