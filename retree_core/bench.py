"""Speed benchmark: `python -m retree_core.bench` prints per-step milliseconds and end-to-end seconds
for presets, image sizes and samplers, plus the app's default path (first frame and full image).

Models are randomly initialised unless shipped weights exist for the default path: speed does not
depend on the values of the weights. Medians over repeats; the machine is noisy.
"""
from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch

from . import compute
from .config import DiffusionConfig, SampleConfig, net_config
from .data.procedural import procedural_tree
from .nets import build_net, count_parameters
from .pipeline import generate, stream
from .samplers import SAMPLERS
from .weights import LoadedModel, load_model


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_model(preset: str, role: str, size: int, device: str) -> LoadedModel:
    cfg = net_config(preset, role, size)
    torch.manual_seed(0)
    return LoadedModel(build_net(cfg, DiffusionConfig()).eval().requires_grad_(False).to(device), cfg, DiffusionConfig(), "random")


def time_steps(model: LoadedModel, mask: np.ndarray | None, sampler: str, steps: int) -> tuple[float, float]:
    """(median ms per step, end-to-end s) for one image."""
    marks: list[float] = []
    tic = time.perf_counter()
    generate(model, mask, [0], sampler=sampler, steps=steps, callback=lambda s: marks.append(time.perf_counter()))
    total = time.perf_counter() - tic
    per_step = np.diff([tic] + marks)
    return float(np.median(per_step)) * 1000, total


def default_path(device: str, repeats: int) -> None:
    """The app's default settings on the shipped concat model, and on a lean 256 px model (random
    weights; speed does not depend on their values) when the shipped one is another size."""
    d = SampleConfig()
    models = []
    try:
        models.append((load_model("concat", role="concat", device=device), "shipped weights/concat"))
    except ValueError:
        pass
    if not models or models[0][0].net_cfg.image_size != 256:
        models.append((compute.run(random_model, "lean", "concat", 256, device), "random-init lean"))
    for model, source in models:
        size = model.net_cfg.image_size
        mask = procedural_tree(size, seed=0)
        first, full = [], []
        for r in range(repeats + 1):
            tic = time.perf_counter()
            frames = stream(model, mask, [r], sampler=d.sampler, steps=d.steps, guidance=model.guidance)
            next(frames)
            t_first = time.perf_counter() - tic
            for frame in frames:
                pass
            if r:  # the first run warms up allocators and thread pools
                first.append(t_first)
                full.append(time.perf_counter() - tic)
        print(f"\ndefault path ({source}, concat, {size} px, {count_parameters(model.net) / 1e6:.1f}M parameters, "
              f"{d.sampler} {d.steps} steps, guidance {model.guidance:g}, the model's recommended):")
        print(f"  first frame   median {statistics.median(first):.3f} s  (target <= 0.5 s)")
        print(f"  full image    median {statistics.median(full):.3f} s  (target <= 3 s at 256 px)  over {repeats} runs")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m retree_core.bench", description=__doc__)
    p.add_argument("--presets", nargs="+", default=["tiny", "lean", "paper"])
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    p.add_argument("--roles", nargs="+", default=["concat", "spade"])
    p.add_argument("--steps", type=int, default=10, help="steps per end-to-end measurement")
    p.add_argument("--repeats", type=int, default=5, help="runs of the default path")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip_grid", action="store_true", help="only the default path")
    args = p.parse_args(argv)
    compute.use_one_thread()  # measure as the app runs: all tensor work on one thread (compute.py)
    if args.threads:
        compute.run(torch.set_num_threads, args.threads)
    dev = args.device
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, device {dev} ({name}), threads {torch.get_num_threads()}, python {sys.version.split()[0]}")
    if not args.skip_grid:
        print(f"\n{'preset':<6} {'role':<7} {'px':>4} {'params':>8} {'sampler':<7} {'ms/step':>8} "
              f"{'s/' + str(args.steps) + ' steps':>11} {'peak RSS MB':>11}")
        for preset in args.presets:
            for size in args.sizes:
                for role in args.roles:
                    model = compute.run(random_model, preset, role, size, dev)
                    mask = procedural_tree(size, seed=0)
                    time_steps(model, mask, "ddim", 2)  # warm-up
                    for sampler in args.samplers:
                        ms, total = compute.run(time_steps, model, mask, sampler, args.steps)
                        print(f"{preset:<6} {role:<7} {size:>4} {count_parameters(model.net) / 1e6:>7.1f}M "
                              f"{sampler:<7} {ms:>8.1f} {total:>11.2f} {peak_rss_mb():>11.0f}")
    default_path(dev, args.repeats)
    if dev.startswith("cuda"):
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MB")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
