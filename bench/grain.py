"""Measure the camera grain an `sr` model lacks, per style, and store it with the model (retree_core/grain.py).

Per data root (its style is the folder's name, as `--style_condition` names styles) and for all roots together
(style "any"): the training photographs at the model's output size, and the same taken down to its input size
(area) and brought back by the model with their annotations; the grain profile is the power the restored
copies lack. Writes `--out` (.safetensors + .json): the same weights, with the profiles in its config.

    python bench/grain.py --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1 --sr weights/sr.safetensors \\
        --out weights/sr
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.config import STYLE_ANY  # noqa: E402
from retree_core.grain import measure  # noqa: E402
from retree_core.superres import upscale  # noqa: E402
from retree_core.weights import export_weights, load_model  # noqa: E402

from model_card import photographs  # noqa: E402  (bench/, this script's folder)


def profile(sr, roots: list[str]) -> dict:
    """The grain profile of the training photographs of `roots` against `sr`'s restored copies."""
    images, masks, _ = photographs(roots, "train", sr.net_cfg.image_size)
    small = np.stack([cv2.resize(i, (sr.net_cfg.sr_input_px,) * 2, interpolation=cv2.INTER_AREA) for i in images])
    return measure(images, upscale(sr, small, masks)).to_dict()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", nargs="+", required=True, help="one style each (the folder's name)")
    p.add_argument("--sr", default="sr", help="the super-resolution model: a name or path")
    p.add_argument("--out", required=True, help="where the model with its grain goes (may be the same file)")
    args = p.parse_args()
    sr = load_model(args.sr, role="sr")
    grain = {Path(root).resolve().name: profile(sr, [root]) for root in args.data_root}
    grain[STYLE_ANY] = profile(sr, args.data_root)
    print(f"wrote {export_weights(sr.source, args.out, extra_meta={'grain': grain})} "
          f"(grain for {', '.join(grain)})")


if __name__ == "__main__":
    main()
