"""The synthetic-data study of the ReTree paper, measured: the same segmenter and schedule trained on real
pairs only, on synthetic pairs only (from each fundus model), and on real + synthetic, each scored on
the fixed validation split that no model trained on.

Every stage is a documented command line (printed before it runs) and is skipped when its output is
already there, so an interrupted study continues where it stopped:

1. `generate --num N` synthetic pairs per source model (stage 1 trees, stage 2 image, super-resolution
   when the shipped sr model fits);
2. `train --mode segment` per arm, all with the same steps, batch, crops and learning rate;
3. `export` (threshold: best F1 on the arm's own training pairs) and `evaluate --segmenter` on the
   validation split;
4. with `--finetune`, per source one more arm: the real pairs alone, starting from that source's
   synthetic-only segmenter (pre-training on synthetic data, then the real-only arm's schedule).

Arms with synthetic pairs take `--train_args`, arms on real pairs alone `--real_args`: augmentation
meant for synthetic images stays off real photographs.

Prints the table as Markdown and writes it with all figures to OUT/study.md and OUT/study.json.

    python bench/synthetic_study.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 \\
        [--sources concat spade] [--num 40] [--steps 600] [--jobs 2] [--finetune] [--out outputs/study]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from retree_core.grain import GRAIN_BY_DEFAULT  # noqa: E402
from retree_core.twigs import TWIGS_BY_DEFAULT  # noqa: E402

COLUMNS = ("f1", "jaccard", "kappa", "mcc", "precision", "recall", "specificity", "accuracy", "auc")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "retree_core", *args]


def run(cmd: list[str], log: Path) -> None:
    """Run one stage with one thread per process (the stages share the machine), its output in `log`."""
    print("$ " + " ".join(cmd[1:]), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("a") as out:
        code = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code:
        raise SystemExit(f"failed ({code}): {' '.join(cmd[1:])}; see {log}")


def real_training_masks(args) -> Path:
    """The training split's annotations as mask files (unaugmented views at --image_size), written once:
    stage 2 alone, on real trees, tells how much the tree source costs the synthetic data."""
    from retree_core.data import AugmentConfig, make_dataset
    from retree_core.images import save_png

    out = Path(args.out) / "real_training_masks"
    views = make_dataset(args.data_root, args.image_size, AugmentConfig(enabled=False), split="train")
    if len(list(out.glob("*.png"))) < len(views):
        for i in range(len(views)):
            item = views[i]
            save_png(out / f"seg_{item['name'].replace('/', '_')}.png", (item["mask"][0].numpy() > 0).astype("uint8") * 255)
    return out


def synthesise(args, source: str) -> Path:
    out = Path(args.out) / f"synthetic_{source}"
    if args.trees == "real":
        masks = real_training_masks(args)
        trees, wanted = ["--masks", str(masks)], len(list(masks.glob("*.png")))
    else:
        trees, wanted = ["--num", str(args.num), "--trees", args.trees, "--tree_sr", args.tree_sr], args.num
    if len(list((out / "images").glob("*.png"))) >= wanted:
        return out
    guidance = [] if args.guidance is None else ["--guidance", str(args.guidance)]
    extras = ["--grain" if args.grain else "--no_grain"]
    if args.trees == "vessel":
        extras += ["--twigs" if args.twigs else "--no_twigs"] + (
            ["--twig_spacing", str(args.twig_spacing)] if args.twigs and args.twig_spacing else [])
    run(command("generate", "--mode", source, *trees, "--seed", str(args.seed), "--sr", args.sr, *guidance, *extras,
                "--output_dir", str(out)), Path(args.out) / "logs" / f"synthetic_{source}.log")
    return out


def arm(args, name: str, synthetic: Path | None, fraction: float, init: Path | None = None) -> dict:
    """Train (from `init`'s weights when given), export and evaluate one arm; its mean validation metrics.
    Arms with synthetic pairs take --train_args, arms on real pairs alone --real_args."""
    out = Path(args.out) / f"arm_{name}"
    log = Path(args.out) / "logs" / f"arm_{name}.log"
    weights = out / "segment.safetensors"
    if not weights.exists():
        data = ["--data_root", *args.data_root]
        mix = [] if synthetic is None else ["--synthetic_root", str(synthetic), "--synthetic_fraction", str(fraction)]
        options = shlex.split(args.real_args if synthetic is None else args.train_args)
        options += [] if init is None else ["--init_weights", str(init)]
        run(command("train", "--mode", "segment", "--preset", args.preset, "--image_size", str(args.image_size),
                    "--crop_px", str(args.crop_px), "--batch_size", str(args.batch_size), "--lr", str(args.lr),
                    "--max_steps", str(args.steps), "--sample_interval", str(args.steps), "--checkpoint_interval",
                    "100", "--seed", str(args.seed), "--output_dir", str(out), "--resume", "--no_progress",
                    *data, *mix, *options), log)
        run(command("export", "--checkpoint", str(out / "last.ckpt"), "--out", str(weights.with_suffix(""))), log)
    metrics = out / "evaluate" / "metrics.json"
    if not metrics.exists():
        run(command("evaluate", "--segmenter", str(weights), "--data_root", *args.data_root, "--split", "val",
                    "--output_dir", str(metrics.parent)), log)
    document = json.loads(metrics.read_text())
    return {"arm": name, "threshold": document["settings"]["threshold"], "images": document["num_images"],
            **document["mean"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", nargs="+", required=True, help="the real data (its train split trains, val scores)")
    p.add_argument("--sources", nargs="*", default=["concat", "spade"],
                   help="fundus models making synthetic pairs (none: the real-only arm alone)")
    p.add_argument("--num", type=int, default=40, help="synthetic pairs per source")
    p.add_argument("--trees", choices=("vessel", "procedural", "real"), default="vessel",
                   help="stage 1: the vessel model, the procedural generator, or (stage 2 alone) the real "
                        "training annotations, one pair each (--num is then their count)")
    p.add_argument("--tree_sr", default="auto", help="stage 1's super-resolution (generate --tree_sr auto|none|NAME)")
    p.add_argument("--sr", default="auto", help="super-resolution for the synthetic images (auto|none|NAME)")
    p.add_argument("--guidance", type=float, default=None, help="of the synthetic images (default: the model's)")
    p.add_argument("--grain", action="store_true", default=GRAIN_BY_DEFAULT,
                   help="the synthetic images with camera grain (generate --grain)")
    p.add_argument("--no_grain", dest="grain", action="store_false", help="the synthetic images without it")
    p.add_argument("--twigs", action="store_true", default=TWIGS_BY_DEFAULT,
                   help="stage-1 trees with thin vessels grown on (generate --twigs)")
    p.add_argument("--no_twigs", dest="twigs", action="store_false", help="stage-1 trees as drawn")
    p.add_argument("--twig_spacing", type=float, default=None, help="generate --twig_spacing (default: its own)")
    p.add_argument("--mix_fraction", type=float, default=0.5, help="synthetic share of the real + synthetic arms")
    p.add_argument("--mix_sources", nargs="*", default=None, help="sources with a real + synthetic arm (default: all)")
    p.add_argument("--skip_real", action="store_true",
                   help="leave out the real-only arm (it does not depend on the synthetic data)")
    p.add_argument("--steps", type=int, default=600, help="training steps of every arm")
    p.add_argument("--preset", default="fine", help="the segmenter's network")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--crop_px", type=int, default=128)
    p.add_argument("--image_size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_args", default="",
                   help="more train options for the arms with synthetic pairs, e.g. '--vessel_fade 0.5 --blur_sigma 1'")
    p.add_argument("--real_args", default="", help="more train options for the arms on real pairs alone")
    p.add_argument("--finetune", action="store_true",
                   help="per source also an arm that trains on the real pairs from the synthetic-only segmenter")
    p.add_argument("--jobs", type=int, default=2, help="stages run side by side")
    p.add_argument("--out", default="outputs/study")
    args = p.parse_args(argv)
    if args.mix_sources and set(args.mix_sources) - set(args.sources):
        p.error(f"--mix_sources must be among --sources {args.sources}")
    return args


def main() -> None:
    args = parse_args()

    with ThreadPoolExecutor(args.jobs) as pool:
        synthetic = dict(zip(args.sources, pool.map(lambda s: synthesise(args, s), args.sources)))
        arms = [] if args.skip_real else [("real", None, 0.0)]
        arms += [(f"synthetic_{s}", synthetic[s], 1.0) for s in args.sources]
        mixed = args.sources if args.mix_sources is None else args.mix_sources
        arms += [(f"real+synthetic_{s}", synthetic[s], args.mix_fraction) for s in mixed]
        rows = list(tqdm(pool.map(lambda a: arm(args, *a), arms), total=len(arms), desc="arms", unit="arm",
                         disable=None))  # a bar on a terminal only
        if args.finetune:  # after the synthetic-only arms: they start from those segmenters
            pretrained = {s: Path(args.out) / f"arm_synthetic_{s}" / "segment.safetensors" for s in args.sources}
            rows += pool.map(lambda s: arm(args, f"synthetic_{s}_then_real", None, 0.0, pretrained[s]), args.sources)

    twigs = (f", twigs{f' every {args.twig_spacing:g} px' if args.twig_spacing else ''}"
             if args.twigs and args.trees == "vessel" else "")
    lines = [f"Segmenter `{args.preset}` preset, {args.image_size} px view, {args.crop_px} px crops, batch {args.batch_size}, "
             f"{args.steps} steps, lr {args.lr}; synthetic arms {args.train_args or 'no more options'}; real-only arms "
             f"{args.real_args or 'no more options'}; {'one' if args.trees == 'real' else args.num} synthetic pair(s) per "
             f"{'real training annotation' if args.trees == 'real' else 'source'} ({args.trees} trees, sr "
             f"{args.sr}{', grain' if args.grain else ''}{twigs}, guidance {args.guidance or 'recommended'}); "
             f"real + synthetic: {args.mix_fraction:.0%} synthetic items. Validation split, inside "
             "the FOV, at the annotation's resolution, mean over images.", "",
             "| training data | threshold | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append(f"| {row['arm']} | {row['threshold']:.2f} | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) + " |")
    table = "\n".join(lines)
    print(table)
    (Path(args.out) / "study.md").write_text(table + "\n")
    (Path(args.out) / "study.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
