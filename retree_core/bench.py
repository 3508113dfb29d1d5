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

from . import compute, precision
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


TRAIN_PRESETS = {"vessel": "lean", "concat": "lean", "spade": "lean", "segment": "fine", "sr": "light"}  # as shipped


def train_images_per_s(role: str, size: int, batch: int, run_in: str, steps: int = 3) -> float:
    """Training throughput of a role's shipped preset on random data: forward, loss, backward and AdamW
    step, as train.py runs them (autocast for the network, the loss in fp32); median of `steps` after a warm-up."""
    cfg = net_config(TRAIN_PRESETS[role], role, size)
    torch.manual_seed(0)
    net = build_net(cfg, DiffusionConfig())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, cfg.input_channels - (1 if role in ("concat", "sr") else 0), size, size)
    mask = torch.randn(batch, 1, size, size) if cfg.conditional or role == "sr" else None
    times = []
    for _ in range(steps + 1):
        tic = time.perf_counter()
        with precision.autocast(run_in, "cpu"):
            inputs = torch.cat([x, mask], 1) if role == "sr" else x
            out = net(inputs, torch.randint(0, 1000, (batch,)), mask if cfg.conditional else None)
        loss = (out.float() - torch.zeros_like(out, dtype=torch.float32)).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tic)
    return batch / statistics.median(times[1:])


def time_steps(model: LoadedModel, mask: np.ndarray | None, sampler: str, steps: int) -> tuple[float, float]:
    """(median ms per step, end-to-end s) for one image."""
    marks: list[float] = []
    tic = time.perf_counter()
    generate(model, mask, [0], sampler=sampler, steps=steps, callback=lambda s: marks.append(time.perf_counter()))
    total = time.perf_counter() - tic
    per_step = np.diff([tic] + marks)
    return float(np.median(per_step)) * 1000, total


def default_path(device: str, repeats: int, precisions: list[str]) -> None:
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
    for (model, source), model.precision in ((m, p) for m in models for p in precisions):
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
              f"{d.sampler} {d.steps} steps, guidance {model.guidance:g}, the model's recommended; {model.precision}):")
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
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=None,
                   help="default: fp32, and bf16 where the device runs it natively")
    p.add_argument("--train_roles", nargs="*", default=list(TRAIN_PRESETS),
                   help="roles whose training images/s are measured (128 px, batch 8, shipped presets)")
    args = p.parse_args(argv)
    compute.use_one_thread()  # measure as the app runs: all tensor work on one thread (compute.py)
    if args.threads:
        compute.run(torch.set_num_threads, args.threads)
    dev = args.device
    precisions = args.precisions or ["fp32"] + (["bf16"] if precision.bf16_supported(dev) else [])
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, device {dev} ({name}), threads {torch.get_num_threads()}, python {sys.version.split()[0]}")
    if args.train_roles and not dev.startswith("cuda"):
        print("\ntraining images/s (128 px, batch 8, the role's shipped preset): "
              + "  ".join(f"{p:>6}" for p in precisions))
        for role in args.train_roles:
            rates = [compute.run(train_images_per_s, role, 128, 8, p) for p in precisions]
            print(f"  {role:<7} {TRAIN_PRESETS[role]:<6} " + "  ".join(f"{r:>6.1f}" for r in rates))
    if not args.skip_grid:
        print(f"\n{'preset':<6} {'role':<7} {'px':>4} {'params':>8} {'prec':<5} {'sampler':<7} {'ms/step':>8} "
              f"{'s/' + str(args.steps) + ' steps':>11} {'peak RSS MB':>11}")
        for preset in args.presets:
            for size in args.sizes:
                for role in args.roles:
                    model = compute.run(random_model, preset, role, size, dev)
                    mask = procedural_tree(size, seed=0)
                    for model.precision in precisions:
                        time_steps(model, mask, "ddim", 2)  # warm-up
                        for sampler in args.samplers:
                            ms, total = compute.run(time_steps, model, mask, sampler, args.steps)
                            print(f"{preset:<6} {role:<7} {size:>4} {count_parameters(model.net) / 1e6:>7.1f}M "
                                  f"{model.precision:<5} {sampler:<7} {ms:>8.1f} {total:>11.2f} {peak_rss_mb():>11.0f}")
    default_path(dev, args.repeats, precisions)
    if dev.startswith("cuda"):
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MB")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
