"""A picture of a style model's styles: validation masks in rows; columns the mask, the image in each of the
model's styles ("any" first, same seed), and the real photograph. Prints the mean colour inside the field
of view per column, so the picture's claim can be read as numbers too.

    python bench/style_samples.py --model runs/concat_style/last.ckpt \\
        --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 [--rows 4] [--out assets/styles.jpg]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.config import SampleConfig  # noqa: E402
from retree_core.data import AugmentConfig, make_dataset  # noqa: E402
from retree_core.images import grid, mask_rgb, to_uint8  # noqa: E402
from retree_core.pipeline import FundusPipeline, tree_masks  # noqa: E402
from retree_core.realism import inception_features, kid  # noqa: E402
from retree_core.weights import load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a style model: name, .safetensors or .ckpt")
    p.add_argument("--data_root", nargs="+", required=True)
    p.add_argument("--rows", type=int, default=4, help="validation masks, spread over the split")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0, help="the shipped files' recommended scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/styles.jpg")
    p.add_argument("--kid", type=int, default=0, help="trees for the KID table (0: none)")
    p.add_argument("--trees", choices=("procedural", "vessel"), default="procedural")
    args = p.parse_args()

    pipe = FundusPipeline.load(args.model, sr="auto")
    if len(pipe.styles) < 2 and not args.kid:
        raise SystemExit(f"{args.model} was trained without styles (--kid still measures its 'any')")
    if len(pipe.styles) > 1:
        picture(pipe, args)
    if args.kid:
        kid_table(pipe, args)


def picture(pipe: FundusPipeline, args: argparse.Namespace) -> None:
    """Validation masks in each style, the real photograph beside them; mean colours printed."""
    data = make_dataset(args.data_root, pipe.output_px, AugmentConfig(enabled=False), split="val")
    picks = np.linspace(0, len(data) - 1, min(args.rows, len(data))).round().astype(int)
    rows, colours = [], {name: [] for name in (*pipe.styles, "real")}
    for i in picks:
        item = data[int(i)]
        mask, fov = item["mask"][0].numpy() > 0, item["fov"][0].numpy() > 0.5
        real = to_uint8(item["image"])
        row = [mask_rgb(mask)]
        for style in pipe.styles:
            image = pipe(mask, SampleConfig(steps=args.steps, guidance=args.guidance, seed=args.seed + int(i),
                                               style=style))[0][0]
            colours[style].append(image[fov].mean(0))
            row.append(image)
        colours["real"].append(real[fov].mean(0))
        rows.append(np.stack(row + [real]))
        print(f"{data.names[int(i)]}: " + ", ".join(f"{k} {np.round(v[-1]).astype(int).tolist()}"
                                                    for k, v in colours.items()), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = grid(rows)
    Image.fromarray(picture).resize((picture.shape[1] // 2, picture.shape[0] // 2), Image.LANCZOS).save(out, quality=85)
    print(f"wrote {out} (columns: mask, {', '.join(pipe.styles)}, real)")


def kid_table(pipe: FundusPipeline, args: argparse.Namespace) -> None:
    """KID of each style's images from the same trees against each data root's photographs."""
    seeds = list(range(args.seed, args.seed + args.kid))
    vessel = load_model("vessel") if args.trees == "vessel" else None
    trees, _ = tree_masks(vessel, seeds, pipe.output_px, trees=args.trees, first_seed=args.seed)
    real = {Path(root).name: inception_features(to_uint8(torch.stack(
        [item["image"] for item in make_dataset(root, pipe.output_px, AugmentConfig(enabled=False), split="all")])))
        for root in args.data_root}
    print(f"\n| style ({args.kid} {args.trees} trees) | " + " | ".join(f"KID vs {name} ({len(f)})"
                                                                    for name, f in real.items()) + " |")
    print("|---|" + "---|" * len(real))
    for style in pipe.styles:
        images = pipe(trees, SampleConfig(steps=args.steps, guidance=args.guidance, seed=args.seed, style=style))[0]
        features = inception_features(images)
        print(f"| {style} | " + " | ".join(f"{kid(features, f).mean:.4f}" for f in real.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
