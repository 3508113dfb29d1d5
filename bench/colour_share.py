"""How much of a fundus model's KID is global colour? Scores a model's validation images in one dataset's
style as generated, then again after each image's colour in the FOV (per channel mean and std) is matched to
a random *training* photograph of that dataset (never a validation one), against the validation photographs.

    python bench/colour_share.py --model weights/spade.safetensors --data_root ../shared/data/CHASE_DB1 \\
        [--style CHASE_DB1] [--repeats 3] [--guidance 2]

Prints one line per repeat (seeds 0, 1000, ...) and the mean and spread of both KIDs. What matching leaves
is texture, shape and detail, which colour correction cannot fix.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.config import SampleConfig  # noqa: E402
from retree_core.evaluate import GenerationOptions, evaluate_generator, load_segmenter  # noqa: E402
from retree_core.pipeline import FundusPipeline  # noqa: E402
from retree_core.realism import inception_features, kid  # noqa: E402

from model_card import photographs, style_for  # noqa: E402  (bench/, this script's folder)


def fov_stats(root: str, split: str, size_px: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Per photograph of the split: (mean, std) of its RGB values in the FOV; and the FOVs."""
    images, _, fovs = photographs([root], split, size_px)
    stats = [(image[fov].astype(np.float64).mean(0), image[fov].astype(np.float64).std(0))
             for image, fov in zip(images, fovs)]
    return stats, list(fovs)


def match_colour(image: np.ndarray, fov: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """`image` with its FOV's per-channel mean and std set to `mean` and `std` (outside the FOV unchanged)."""
    out = image.astype(np.float64)
    inside = out[fov]
    out[fov] = (inside - inside.mean(0)) / (inside.std(0) + 1e-6) * std + mean
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="weights name or path")
    p.add_argument("--data_root", required=True, help="one dataset: its validation split is scored")
    p.add_argument("--style", default=None, help="default: the dataset folder's name where the model has it")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0, help="of the training photographs drawn for matching")
    args = p.parse_args()
    pipe = FundusPipeline.load(args.model, sr="auto")
    style = args.style or style_for(pipe, args.data_root)
    train_stats, _ = fov_stats(args.data_root, "train", pipe.output_px)
    _, fovs = fov_stats(args.data_root, "val", pipe.output_px)
    rng, segmenter = np.random.default_rng(args.seed), load_segmenter("classical")
    raw, matched, real_features = [], [], None
    for repeat in range(args.repeats):
        sample = SampleConfig(sampler="dpmpp", steps=args.steps, guidance=args.guidance, seed=1000 * repeat,
                              style=style)
        report = evaluate_generator(pipe, [args.data_root], segmenter, "val", GenerationOptions(sample))
        generated, real = report.arrays["generated"], report.arrays["real"]
        recoloured = np.stack([match_colour(g, fov, *train_stats[rng.integers(len(train_stats))])
                               for g, fov in zip(generated, fovs)])
        if real_features is None:  # the same validation photographs every repeat
            real_features = inception_features(real)
        raw.append(kid(inception_features(generated), real_features).mean)
        matched.append(kid(inception_features(recoloured), real_features).mean)
        print(f"seed {1000 * repeat}: KID {raw[-1]:.4f} as generated, {matched[-1]:.4f} colour-matched", flush=True)
    print(f"{args.model} on {args.data_root} ({style}): KID {np.mean(raw):.4f} ± {np.std(raw):.4f} as generated, "
          f"{np.mean(matched):.4f} ± {np.std(matched):.4f} colour-matched to training photographs")


if __name__ == "__main__":
    main()
