"""What the super-resolution stage costs on real photographs: the best a perfect 128 px generator could score.

Per dataset, the validation photographs (which no model trained on) at the output size, then the same taken
down to the generator's size (area) and brought back by bicubic and by each super-resolution model (with the
annotation as its mask), each set scored against that dataset's training photographs: KID (raw units, as
bench/model_card.py), grain (the std in grey levels of what a 1 px blur removes) and mask fidelity (Dice
between the annotation and the vessels --segmenter finds, as the card's: where a model's row is above the
photographs' own, super-resolution makes vessels easier to find than a photograph shows them).

    python bench/sr_floor.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 [--sr sr runs/x/last.ckpt]

The gap between the first row and a model's is KID that every generated image pays, however good the 128 px
generator; a model nearer the first row is the better super-resolution for the pipeline.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.evaluate import load_segmenter, mask_fidelity  # noqa: E402
from retree_core.realism import grain, inception_features, kid  # noqa: E402
from retree_core.superres import choose_sr, upscale  # noqa: E402

from model_card import photographs  # noqa: E402  (bench/, this script's folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", nargs="+", required=True, help="each scored on its own")
    p.add_argument("--sr", nargs="+", default=["sr"], help="super-resolution models: names or paths")
    p.add_argument("--size_px", type=int, default=128, help="the generator's size the photographs go down to")
    p.add_argument("--segmenter", default="segment", help="finds the vessels for mask fidelity: classical, segment "
                   "or a path")
    args = p.parse_args()
    segmenter = load_segmenter(args.segmenter)
    models = {name: choose_sr(name, args.size_px) for name in args.sr}
    output_px = {m.net_cfg.image_size for m in models.values()}
    if len(output_px) != 1:
        raise SystemExit(f"--sr: the models make different sizes ({sorted(output_px)}); compare one size at a time")
    size = output_px.pop()
    print("| data | photographs | KID against the training photographs | grain | mask fidelity |")
    print("|---|---|---|---|---|")
    for root in args.data_root:
        reference = inception_features(photographs([root], "train", size)[0])
        images, masks, fovs = photographs([root], "val", size)
        small = np.stack([cv2.resize(image, (args.size_px,) * 2, interpolation=cv2.INTER_AREA) for image in images])
        rows = {f"validation, {size} px": images,
                "bicubic": np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in small])}
        rows.update({f"{name}": upscale(model, small, masks) for name, model in models.items()})
        for name, row in rows.items():
            score = kid(inception_features(row), reference)
            fidelity = np.mean([mask_fidelity(segmenter, *item) for item in zip(row, masks, fovs)])
            print(f"| {Path(root).name} | {name} | {score.mean:.4f} ± {score.std:.4f} "
                  f"| {np.mean([grain(image, fov) for image, fov in zip(row, fovs)]):.2f} | {fidelity:.3f} |", flush=True)


if __name__ == "__main__":
    main()
