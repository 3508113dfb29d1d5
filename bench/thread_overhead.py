"""Why the app runs its tensor work on one thread (retree_core/compute.py): the same 20-step sampling
on the thread that computed first, on a second thread after that, and through `compute.run` when the
compute thread is the only one that ever computed. Medians over --repeats runs, after a warm-up.

    python bench/thread_overhead.py [--size 256] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "main": "sampling on the main thread, the only one that computes",
    "second": "sampling on a second thread after the main thread computed (two OpenMP teams)",
    "compute": "sampling through compute.run with use_one_thread() (the app's way: one team)",
}


def measure(case: str, size: int, repeats: int) -> list[float]:
    sys.path.insert(0, str(ROOT))
    from retree_core import compute
    from retree_core.bench import random_model
    from retree_core.data.procedural import procedural_tree
    from retree_core.pipeline import generate

    if case == "compute":
        compute.use_one_thread()
    model = compute.run(random_model, "lean", "concat", size, "cpu")
    mask = procedural_tree(size, seed=0)

    def once() -> float:
        tic = time.perf_counter()
        generate(model, mask, [0], sampler="dpmpp", steps=20)
        return time.perf_counter() - tic

    once()  # warm-up; for "second" this is the main thread's computation
    pool = ThreadPoolExecutor(1) if case == "second" else None
    return [pool.submit(once).result() if pool else once() for _ in range(repeats)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--case", choices=list(CASES), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:  # one case per process: OpenMP teams outlive the threads' work
        print(" ".join(f"{t:.3f}" for t in measure(args.case, args.size, args.repeats)))
        return
    print(f"lean concat, {args.size} px, DPM-Solver++ 20 steps, median of {args.repeats} runs")
    for case, what in CASES.items():
        out = subprocess.run([sys.executable, __file__, "--case", case, "--size", str(args.size),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
        times = [float(t) for t in out.stdout.split()]
        print(f"  {statistics.median(times):6.2f} s  {what}")


if __name__ == "__main__":
    main()
