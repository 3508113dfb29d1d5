"""The equal-compute recipe study: each training recipe gets the same wall-clock budget on the same
thread(s), from the same initial weights and data, then is scored on the fixed validation split.

    python bench/recipes.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 --minutes 20 \\
        --recipes today v_min_snr --out outputs/recipes [--mode concat] [--threads 1] [--eval_seeds 2]

A budget is --minutes of wall clock, or --max_steps / --images (equal compute for recipes of equal cost per
step / per image, e.g. batch sizes; steady on a shared machine). A recipe's cooldown_share lets the learning
rate fall to zero over that share of a step or image budget.

Prints one table (steps and images seen in the budget, the last 100 steps' loss, KID against the validation
photographs with its spread over seeds, mask fidelity, grain against the real photographs' grain) and writes
it with recipes.json and recipes.png (rows: one recipe's samples for the first validation masks, then the
real photographs). Recipes are data (RECIPES below): TrainConfig fields over the common settings. A recipe of
another image size (base_64px) is scored through the first --sr that fits it, e.g. `--sr auto
outputs/sr_x8.safetensors` (an x8 sr: `train --mode sr --sr_scale 8 --init_weights sr ...`); give it a
--minutes budget, since its steps cost less.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.config import SampleConfig, TrainConfig  # noqa: E402
from retree_core.evaluate import GenerationOptions, evaluate_generator, load_segmenter  # noqa: E402
from retree_core.images import grid, save_png  # noqa: E402
from retree_core.pipeline import FundusPipeline  # noqa: E402
from retree_core.superres import choose_sr, fits  # noqa: E402
from retree_core.train import LOG_NAME, train  # noqa: E402
from retree_core.weights import LoadedModel, load_model  # noqa: E402

TODAY = dict(prediction="eps", loss_weighting="uniform", l1_weight=1.0)  # the paper's: the shipped files'
RECIPES: dict[str, dict] = {
    "today": TODAY,  # epsilon prediction, linear betas, L1 + MSE, uniform t, batch 8, lr 5e-4, EMA 0.999
    "v_min_snr": dict(prediction="v", loss_weighting="min_snr", min_snr_gamma=5.0, l1_weight=0.0),  # the default
    "eps_min_snr": dict(TODAY, loss_weighting="min_snr", min_snr_gamma=5.0),
    "batch16_lr1e-3": dict(batch_size=16, lr=1e-3),  # the default recipe otherwise
    # EMA lengths differ only past update_ema's warm-up (decay <= (1 + step) / (10 + step): 0.999 from step 8,991)
    "ema_0.995": dict(ema_decay=0.995),
    "ema_0.9995": dict(ema_decay=0.9995),
    "base_64px": dict(image_size=64),  # the default recipe at 64 px, scored through an x8 sr (--sr)
    "today_cooldown": dict(TODAY, cooldown_share=0.25),  # WSD: constant, then linearly to 0 over the last 25 %
    "v_min_snr_cooldown": dict(cooldown_share=0.25),
}


NO_STEP_BUDGET = 10**9  # max_steps of a wall-clock (--minutes) budget


def recipe_config(name: str, base: TrainConfig, minutes: float | None, images: int | None, out: Path) -> TrainConfig:
    """The recipe's TrainConfig: its overrides on `base`, the budget in its own steps (an image budget
    over its batch), its cooldown as a share of them."""
    overrides = dict(RECIPES[name])
    share = overrides.pop("cooldown_share", 0.0)
    cfg = replace(base, **overrides, output_dir=str(out / name), max_minutes=minutes)
    if images:
        cfg = replace(cfg, max_steps=math.ceil(images / (cfg.batch_size * cfg.grad_accum)))
    if share and cfg.max_steps == NO_STEP_BUDGET:
        raise SystemExit(f"recipe {name}: a cooldown needs a step or image budget (--max_steps or --images)")
    return replace(cfg, cooldown_steps=round(share * cfg.max_steps))


def run_recipe(name: str, base: TrainConfig, minutes: float | None, images: int | None, out: Path) -> dict:
    """Train one recipe for the budget (resumable: a rerun continues the same folder) and sum up its log."""
    cfg = recipe_config(name, base, minutes, images, out)
    tic = time.perf_counter()
    checkpoint = train(cfg)
    rows = [json.loads(r) for r in (out / name / LOG_NAME).read_text().splitlines()]
    return {"recipe": name, "overrides": RECIPES[name], "checkpoint": str(checkpoint), "steps": rows[-1]["step"],
            "images_seen": rows[-1]["step"] * cfg.batch_size * cfg.grad_accum,
            "loss_last_100": float(np.mean([r["loss"] for r in rows[-100:]])),
            "train_s": round(time.perf_counter() - tic, 1)}


def fitting_sr(choices: list[str], image_px: int) -> LoadedModel | None:
    """The first of `choices` (auto, none, a name or path) that upscales `image_px` images; None if none does.
    A file that cannot be read is refused, not skipped."""
    for choice in choices:
        if choice == "none":
            return None
        sr = choose_sr(choice, image_px) if choice == "auto" else load_model(choice, role="sr")
        if fits(sr, image_px):
            return sr
    return None


def score(result: dict, args: argparse.Namespace) -> tuple[dict, np.ndarray, np.ndarray]:
    """KID (mean and spread over seeds), fidelity and grain of a recipe's checkpoint on the validation split."""
    segmenter = load_segmenter(args.segmenter)
    model = load_model(result["checkpoint"], precision=args.precision)
    pipe = FundusPipeline(model, fitting_sr(args.sr, model.net_cfg.image_size))
    kids, reports = [], []
    for s in range(args.eval_seeds):
        sample = SampleConfig(steps=args.steps, guidance=args.guidance, seed=1000 * s)
        report = evaluate_generator(pipe, args.data_root, segmenter, "val", GenerationOptions(sample, args.num))
        reports.append(report)
        if report.summary["kid"] is not None:
            kids.append(report.summary["kid"]["mean"])
    means = [r.mean() for r in reports]
    result.update(kid=float(np.mean(kids)) if kids else None, kid_spread=float(np.std(kids)) if kids else None,
                  fidelity=float(np.mean([m["fidelity_dice"] for m in means])),
                  real_fidelity=float(np.mean([m["real_image_dice"] for m in means])),
                  grain=float(np.mean([m["grain"] for m in means])),
                  real_grain=float(np.mean([m["real_grain"] for m in means])))
    return result, reports[0].arrays["generated"], reports[0].arrays["real"]


def table(results: list[dict]) -> str:
    lines = ["| recipe | steps | images seen | loss (last 100) | KID x1e3 | mask fidelity | grain (real) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        kid = "-" if r["kid"] is None else f"{1e3 * r['kid']:.0f} ± {1e3 * r['kid_spread']:.0f}"
        lines.append(f"| {r['recipe']} | {r['steps']:,} | {r['images_seen']:,} | {r['loss_last_100']:.4f} | {kid} | "
                     f"{r['fidelity']:.3f} (real {r['real_fidelity']:.3f}) | {r['grain']:.2f} ({r['real_grain']:.2f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", nargs="+", default=None, help="default: the embedded photograph")
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=["today", "v_min_snr"])
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget per recipe")
    p.add_argument("--max_steps", type=int, default=None, help="a step budget instead of --minutes: equal "
                   "compute for recipes of equal cost per step")
    p.add_argument("--images", type=int, default=None, help="an image budget instead of --minutes: each recipe "
                   "trains for this many images over its batch size")
    p.add_argument("--style_condition", action="store_true", help="learn the data roots' styles (needed to "
                   "continue a styled file with --init_weights)")
    p.add_argument("--mode", choices=("concat", "spade"), default="concat")
    p.add_argument("--preset", default="lean")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--init_weights", default=None, help="the same start for every recipe (default: seed 0's init)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20, help="sampler steps (DPM-Solver++) for scoring")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--sr", nargs="+", default=["auto"], help="super-resolution of the samples before scoring: "
                   "auto | none | paths; each recipe's samples go through the first that fits their size "
                   "(e.g. auto outputs/sr_x8.safetensors for a 64 px recipe beside 128 px ones)")
    p.add_argument("--segmenter", default="segment", help="for mask fidelity (classical: the ridge filter)")
    p.add_argument("--eval_seeds", type=int, default=2, help="generations per validation mask")
    p.add_argument("--num", type=int, default=None, help="validation masks scored (default: all)")
    p.add_argument("--out", default="outputs/recipes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    base = TrainConfig(mode=args.mode, preset=args.preset, image_size=args.image_size, data_root=args.data_root,
                       batch_size=8, lr=5e-4, max_steps=args.max_steps or NO_STEP_BUDGET, sample_interval=10**9,
                       style_condition=args.style_condition,
                       checkpoint_interval=100, init_weights=args.init_weights, precision=args.precision,
                       progress=False, resume=True)
    results, rows, real = [], [], None
    for name in tqdm(args.recipes, desc="recipes", unit="recipe", disable=None):  # a bar on a terminal only
        minutes = None if args.max_steps or args.images else args.minutes
        result, generated, real = score(run_recipe(name, base, minutes, args.images, out), args)
        results.append(result)
        rows.append(generated[:6])
        print(table(results[-1:]).splitlines()[-1], flush=True)
    text = table(results)
    print(f"\n{text}")
    (out / "recipes.md").write_text(f"{' '.join(['python bench/recipes.py'] + (argv or sys.argv[1:]))}\n\n{text}\n")
    (out / "recipes.json").write_text(json.dumps(results, indent=2))
    save_png(out / "recipes.png", grid(rows + [real[:6]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
