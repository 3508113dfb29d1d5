"""How close are the fast samplers to the paper's 1000-step DDPM on the same model and masks?

For each sampler setting it generates one image per validation mask with the same seeds, then prints
  - MAE / PSNR against the 1000-step DDIM solution from the same noise (the exact probability-flow
    ODE; the deterministic fast solvers approximate it, so this is their numerical error),
  - per-channel mean colour inside the FOV and the mask fidelity (Dice between the mask and a
    classical ridge-filter segmentation of the generated image, inside the FOV), compared with
    1000-step DDPM (stochastic: its images differ, its statistics should not).

    python bench/sampler_agreement.py --checkpoint runs/concat/last.ckpt [--data_root ../shared/data/DRIVE]
        [--num 4] [--settings ddpm:1000 ddim:1000 dpmpp:20 dpmpp:25 ddim:25 ddpm:50] [--guidance G]

A setting SAMPLER:STEPS[:PRECISION] (fp32 unless given) compares precisions too, with --reference naming the
setting the others are measured against (default ddim:1000), e.g. bf16 against fp32 sampling:

    python bench/sampler_agreement.py --checkpoint concat --data_root ../shared/data/DRIVE ../shared/data/CHASE_DB1
        --num 10 --settings dpmpp:20 dpmpp:20:bf16 --reference dpmpp:20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retree_core.data import make_dataset, segment_vessels_classical  # noqa: E402
from retree_core.images import to_uint8  # noqa: E402
from retree_core.pipeline import generate  # noqa: E402
from retree_core.precision import resolve  # noqa: E402
from retree_core.weights import load_model  # noqa: E402


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="concat", help="weights name, .safetensors or .ckpt")
    p.add_argument("--data_root", nargs="*", default=None, help="validation masks from here (default: embedded)")
    p.add_argument("--num", type=int, default=4)
    p.add_argument("--settings", nargs="+", default=["ddpm:1000", "ddim:1000", "dpmpp:20", "dpmpp:25", "ddim:25"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's recommended scale")
    p.add_argument("--reference", default="ddim:1000", help="the setting the others are compared with")
    args = p.parse_args()

    model = load_model(args.checkpoint)
    guidance = model.guidance if args.guidance is None else args.guidance
    size = model.net_cfg.image_size
    val = make_dataset(args.data_root, size, split="val")
    items = [val[i % len(val)] for i in range(args.num)]
    masks = np.stack([it["mask"][0].numpy() > 0 for it in items])
    fovs = np.stack([it["fov"][0].numpy() > 0 for it in items])
    seeds = [args.seed + i for i in range(args.num)]
    print(f"model {model.source} ({model.net_cfg.role}, {size} px), {args.num} validation masks: "
          f"{', '.join(it['name'] for it in items)}; guidance {guidance:g}")

    results: dict[str, np.ndarray] = {}
    for setting in args.settings:
        name, steps, *precision = setting.split(":")
        model.precision = resolve(precision[0] if precision else "fp32", "cpu")
        tic = time.perf_counter()
        results[setting] = to_uint8(generate(model, masks, seeds, sampler=name, steps=int(steps), guidance=guidance))
        print(f"  sampled {setting:<10} in {time.perf_counter() - tic:7.1f} s", flush=True)

    ref_ode = results.get(args.reference)
    print(f"\n{'setting':<15} {'MAE vs ' + args.reference:>17} {'PSNR dB':>8} {'mean RGB in FOV':>20} {'fidelity Dice':>14}")
    for setting, images in results.items():
        rgb = np.mean([img[f].mean(axis=0) for img, f in zip(images, fovs)], axis=0)
        fid = np.mean([dice(segment_vessels_classical(img, f) & f, m & f) for img, m, f in zip(images, masks, fovs)])
        if ref_ode is not None and setting != args.reference:
            err = np.abs(images.astype(float) - ref_ode.astype(float))
            mae, psnr = err.mean(), 10 * np.log10(255 ** 2 / max((err ** 2).mean(), 1e-9))
            cmp = f"{mae:17.2f} {psnr:8.2f}"
        else:
            cmp = f"{'-':>17} {'-':>8}"
        print(f"{setting:<15} {cmp} {'/'.join(f'{c:.0f}' for c in rgb):>20} {fid:14.3f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
