"""One accelerator session, prepared: continue the vessel, concat and SPADE models from the shipped files,
export them and measure them, everything in one small output folder to bring back.

    ./run.sh gpu        # on the lent machine (DATA_ROOT, MINUTES, BATCH from the environment), or:
    python bench/gpu_session.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 --out OUT \\
        [--minutes 2.5] [--batch_size 64] [--device cuda] [--modes vessel concat spade]

Each model trains for --minutes (bf16 where the device has it, channels-last, and torch.compile with
--compile) from its shipped file (`--init_weights`, the optimiser starts afresh), with the learning rate
scaled with the batch (lr 5e-4 at batch 8, square root). OUT then holds, at most 8 files: MODE.safetensors
and MODE.json per model (fp16, about 13 MB each) and figures.md, the card's figures for them (fundus models:
mask fidelity, KID and grain on the validation split, super-resolved; vessel: the share of trees the
plausibility filter keeps and the median largest connected piece). Training checkpoints stay in OUT/../
runs_gpu (not brought back). The tiny preset runs it on a CPU in seconds (tests/test_gpu_session.py).
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
from retree_core.evaluate import GenerationOptions, evaluate_generator, load_segmenter  # noqa: E402
from retree_core.pipeline import FundusPipeline, generate, vessel_masks  # noqa: E402
from retree_core.plausibility import DEFAULT_THRESHOLD, plausibility  # noqa: E402
from retree_core.segmentation import export_run  # noqa: E402
from retree_core.train import train  # noqa: E402
from retree_core.weights import load_model  # noqa: E402

BASE_LR, BASE_BATCH = 5e-4, 8  # the shipped runs' settings
RECOMMENDED_GUIDANCE = 2.0  # what the shipped fundus models recommend (their files)
SHIPPED_RECIPE = dict(prediction="eps", loss_weighting="uniform", l1_weight=1.0)  # continuing them needs theirs


def train_one(mode: str, args: argparse.Namespace, runs: Path) -> Path:
    """Continue one model for the budget; its checkpoint."""
    lr = BASE_LR * math.sqrt(args.batch_size / BASE_BATCH)
    styled = not args.from_scratch and bool(load_model(mode, role=mode).net_cfg.styles)  # keep a file's styles
    cfg = TrainConfig(mode=mode, preset=args.preset, image_size=args.image_size, data_root=args.data_root,
                      batch_size=args.batch_size, lr=lr, max_steps=args.max_steps or 10**9,
                      max_minutes=None if args.max_steps else args.minutes, init_weights=None if args.from_scratch else mode,
                      soft_tree_px=1.5 if mode == "vessel" else 0.0, output_dir=str(runs / mode),
                      sample_interval=10**9, checkpoint_interval=500, device=args.device, precision=args.precision,
                      channels_last=args.device.startswith("cuda"), compile=args.compile, progress=False,
                      resume=True, style_condition=styled, **({} if args.from_scratch else SHIPPED_RECIPE))
    return train(cfg)


def fundus_row(mode: str, weights: Path, args: argparse.Namespace) -> str:
    pipe = FundusPipeline.load(str(weights), role=mode, sr=args.sr, device=args.device, precision=args.precision)
    options = GenerationOptions(SampleConfig(steps=20), num=args.num)
    report = evaluate_generator(pipe, args.data_root, load_segmenter(args.segmenter), "val", options)
    mean, kid = report.mean(), report.summary["kid"]
    kid_text = "-" if kid is None else f"{kid['mean']:.4f} ± {kid['std']:.4f}"
    return (f"| {mode} | {pipe.model.trained_steps:,} | fidelity {mean['fidelity_dice']:.3f} (real "
            f"{mean['real_image_dice']:.3f}) | KID {kid_text} | grain {mean['grain']:.2f} / {mean['real_grain']:.2f} |")


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
    p.add_argument("--modes", nargs="+", default=["vessel", "concat", "spade"])
    p.add_argument("--minutes", type=float, default=2.5, help="training budget per model")
    p.add_argument("--max_steps", type=int, default=None, help="a step budget instead (tests)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--preset", default="lean")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--from_scratch", action="store_true", help="new models instead of the shipped files (tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--sr", default="auto")
    p.add_argument("--segmenter", default="segment")
    p.add_argument("--num", type=int, default=None, help="validation masks for the fundus figures (default all)")
    p.add_argument("--trees", type=int, default=64, help="trees for the vessel figures")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out.parent / f"{out.name}_runs"
    lines = [f"# GPU session {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {' '.join(sys.argv)}", "",
             f"device {args.device}, batch {args.batch_size}, {args.minutes} min per model", "",
             "| model | steps | | | |", "|---|---|---|---|---|"]
    for mode in args.modes:
        tic = time.perf_counter()
        checkpoint = train_one(mode, args, runs)
        guidance = RECOMMENDED_GUIDANCE if mode != "vessel" else None
        weights = export_run(checkpoint, out / mode, guidance=guidance)
        lines.append(vessel_row(weights, args) if mode == "vessel" else fundus_row(mode, weights, args))
        print(lines[-1], f"({time.perf_counter() - tic:.0f} s)", flush=True)
    (out / "figures.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
