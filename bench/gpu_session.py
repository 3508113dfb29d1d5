"""One accelerator session, prepared: continue the super-resolution, concat and SPADE models (and the vessel
model on request) from the shipped files, export them and measure them, in one small output folder to bring back.

    ./run.sh gpu        # on the lent machine (DATA_ROOT, MINUTES, BATCH from the environment), or:
    python bench/gpu_session.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 --out OUT \\
        [--minutes 2.5] [--batch_size 64] [--device cuda] [--modes sr concat spade]  # up to three of these and vessel

Each model trains for --minutes (bf16 where the device has it, channels-last, and torch.compile with
--compile) from its shipped file (`--init_weights`, the optimiser starts afresh), with the learning rate
scaled with the batch (lr 5e-4 at batch 8, square root); sr at 4x the generators' size on crops of their
size, as shipped. OUT then holds at most 8 files (so three models): MODE.safetensors and MODE.json per model
(fp16, at most 13 MB each) and figures.md, the card's figures for them (sr: PSNR and SSIM against bicubic on
the validation split; fundus models: mask fidelity, KID and grain on the validation split, super-resolved by
this session's sr when it trained one; vessel: the share of trees the plausibility filter keeps and the
median largest connected piece). Training checkpoints stay beside it in OUT_runs (not brought back). The
tiny preset runs it on a CPU in seconds (tests/test_gpu_session.py).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.config import SampleConfig, TrainConfig  # noqa: E402
from retree_core.evaluate import GenerationOptions, evaluate_generator, evaluate_sr, load_segmenter  # noqa: E402
from retree_core.pipeline import FundusPipeline, generate, vessel_masks  # noqa: E402
from retree_core.plausibility import DEFAULT_THRESHOLD, plausibility  # noqa: E402
from retree_core.segmentation import export_run  # noqa: E402
from retree_core.train import train  # noqa: E402
from retree_core.weights import load_model, read_model_info  # noqa: E402

BASE_LR, BASE_BATCH = 5e-4, 8  # the shipped runs' settings
RECOMMENDED_GUIDANCE = 2.0  # what the shipped fundus models recommend (their files)
SHIPPED_RECIPE = dict(prediction="eps", loss_weighting="uniform", l1_weight=1.0)  # continuing them needs theirs
SHIPPED_PRESETS = {"sr": "light"}  # the shipped files' presets where not --preset's
SR_SCALE = 4  # sr's output is this many times the generators' size (--image_size)
MAX_FILES = 8  # what the folder brought back may hold


def train_one(mode: str, args: argparse.Namespace, runs: Path) -> Path:
    """Continue one model for the budget; its checkpoint."""
    lr = BASE_LR * math.sqrt(args.batch_size / BASE_BATCH)
    styled = not args.from_scratch and bool(load_model(mode, role=mode).net_cfg.styles)  # keep a file's styles
    preset = args.preset if args.from_scratch else SHIPPED_PRESETS.get(mode, args.preset)
    sizes = dict(image_size=args.image_size * SR_SCALE, sr_scale=SR_SCALE, crop_px=args.image_size) if mode == "sr" \
        else dict(image_size=args.image_size)
    cfg = TrainConfig(mode=mode, preset=preset, data_root=args.data_root, **sizes,
                      batch_size=args.batch_size, lr=lr, max_steps=args.max_steps or 10**9,
                      max_minutes=None if args.max_steps else args.minutes, init_weights=None if args.from_scratch else mode,
                      soft_tree_px=1.5 if mode == "vessel" else 0.0, output_dir=str(runs / mode),
                      sample_interval=10**9, checkpoint_interval=500, device=args.device, precision=args.precision,
                      channels_last=args.device.startswith("cuda"), compile=args.compile, progress=False,
                      resume=True, style_condition=styled, **({} if args.from_scratch else SHIPPED_RECIPE))
    return train(cfg)


def sr_row(weights: Path, args: argparse.Namespace) -> str:
    mean = evaluate_sr(str(weights), args.data_root, "val", args.device).mean()
    steps = read_model_info(weights, strict=True)["trained_steps"]  # the header: evaluate_sr loaded the model
    return (f"| sr | {steps:,} | PSNR {mean['psnr_sr']:.2f} dB (bicubic "
            f"{mean['psnr_bicubic']:.2f}) | SSIM {mean['ssim_sr']:.3f} (bicubic {mean['ssim_bicubic']:.3f}) | |")


def fundus_row(mode: str, weights: Path, args: argparse.Namespace, sr: str) -> str:
    pipe = FundusPipeline.load(str(weights), role=mode, sr=sr, device=args.device, precision=args.precision)
    options = GenerationOptions(SampleConfig(steps=20), num=args.num)
    report = evaluate_generator(pipe, args.data_root, load_segmenter(args.segmenter), "val", options)
    mean, kid = report.mean(), report.summary["kid"]
    kid_text = "-" if kid is None else f"{kid['mean']:.4f} ± {kid['std']:.4f}"
    return (f"| {mode} | {pipe.model.trained_steps:,} | fidelity at {pipe.output_px} px {mean['fidelity_dice']:.3f} "
            f"(real {mean['real_image_dice']:.3f}) | KID {kid_text} | grain {mean['grain']:.2f} / {mean['real_grain']:.2f} |")


def vessel_row(weights: Path, args: argparse.Namespace) -> str:
    model = load_model(str(weights), role="vessel", device=args.device, precision=args.precision)
    trees = vessel_masks(generate(model, None, list(range(args.trees)), steps=20))
    scores = [plausibility(tree) for tree in trees]
    kept = sum(s.value >= DEFAULT_THRESHOLD for s in scores)
    piece = float(np.median([s.stats["largest_component_fraction"] for s in scores]))
    return (f"| vessel | {model.trained_steps:,} | kept {kept} of {len(trees)} | largest piece {100 * piece:.0f} % "
            f"| |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", nargs="+", default=None)
    p.add_argument("--out", required=True, help="the folder to bring back (at most 8 files)")
    p.add_argument("--modes", nargs="+", default=["sr", "concat", "spade"], choices=["sr", "concat", "spade", "vessel"],
                   help="in this order (sr first: the fundus figures then use it)")
    p.add_argument("--minutes", type=float, default=2.5, help="training budget per model")
    p.add_argument("--max_steps", type=int, default=None, help="a step budget instead (tests)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--preset", default="lean")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--from_scratch", action="store_true", help="new models instead of the shipped files (tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--sr", default="auto", help="super-resolves the fundus figures (auto: this session's sr "
                   "if it trained one, else the shipped)")
    p.add_argument("--segmenter", default="segment")
    p.add_argument("--num", type=int, default=None, help="validation masks for the fundus figures (default all)")
    p.add_argument("--trees", type=int, default=64, help="trees for the vessel figures")
    args = p.parse_args(argv)
    if 2 * len(set(args.modes)) + 1 > MAX_FILES:
        p.error(f"--modes: {len(set(args.modes))} models make {2 * len(set(args.modes)) + 1} files; the folder "
                f"brought back holds at most {MAX_FILES} (three models)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out.parent / f"{out.name}_runs"
    lines = [f"# GPU session {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {' '.join(sys.argv)}", "",
             f"device {args.device}, batch {args.batch_size}, {args.minutes} min per model", "",
             "| model | steps | | | |", "|---|---|---|---|---|"]
    sr = args.sr
    for mode in dict.fromkeys(args.modes):
        tic = time.perf_counter()
        checkpoint = train_one(mode, args, runs)
        guidance = RECOMMENDED_GUIDANCE if mode in ("concat", "spade") else None
        weights = export_run(checkpoint, out / mode, guidance=guidance)
        if mode == "sr":
            sr = str(weights) if args.sr == "auto" else sr
            lines.append(sr_row(weights, args))
        else:
            lines.append(vessel_row(weights, args) if mode == "vessel" else fundus_row(mode, weights, args, sr))
        print(lines[-1], f"({time.perf_counter() - tic:.0f} s)", flush=True)
    (out / "figures.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
