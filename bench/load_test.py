"""Load test of the app: concurrent gradio_client sessions calling /generate on localhost.

Starts `app.py` on a free localhost port (tests/app_server.running_app) with a tiny concat model trained
for the occasion (tests/tiny_models; or the models in --weights-dir), then `--clients` clients, each its
own session, call `/generate` `--calls` times at `--steps` steps. Measured: requests completed and
failed, per-request latency (queueing included: the app generates one image at a time), the app
process's peak resident memory (VmRSS sampled every 0.2 s), and the latency of a trivial request
(GET /config and GET /gradio_api/info, repeated during the load). Everything stops at --timeout_s.

    python bench/load_test.py [--clients 16] [--calls 3] [--steps 4] [--timeout_s 300] [--weights-dir DIR]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from app_server import running_app  # noqa: E402
from tiny_models import export_tiny, train_tiny  # noqa: E402

SAMPLE_S = 0.2  # memory sampling period
PROBE_S = 0.5  # period of the trivial requests


@dataclass
class Results:
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unfinished: int = 0
    probes_ms: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def app_pid(port: int) -> int:
    """The process serving app.py on `port` (running_app keeps its handle to itself)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"app.py") for a in argv) and str(port).encode() in argv:
                return int(entry.name)
    raise RuntimeError(f"no app.py process on port {port}")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample_memory(pid: int, results: Results, stop: threading.Event) -> None:
    while not stop.is_set():
        value = rss_mb(pid)
        if value is not None:
            results.rss_mb.append(value)
        stop.wait(SAMPLE_S)


def probe(url: str, paths: list[str], results: Results, stop: threading.Event) -> None:
    """Time trivial GETs (no queue, no model) while the load runs."""
    while not stop.is_set():
        for path in paths:
            tic = time.perf_counter()
            try:
                with urllib.request.urlopen(url + path, timeout=30) as response:
                    response.read()
                results.probes_ms.setdefault(path, []).append(1000 * (time.perf_counter() - tic))
            except OSError as exc:
                results.probes_ms.setdefault(path + " (failed)", []).append(0.0)
                print(f"probe {path} failed: {exc}", file=sys.stderr)
        stop.wait(PROBE_S)


def one_client(url: str, mask: str, calls: int, steps: int, number: int, deadline: float, results: Results) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    for call in range(calls):
        left = deadline - time.monotonic()
        if left <= 0:
            with results.lock:
                results.unfinished += calls - call
            return
        tic = time.perf_counter()
        job = client.submit(handle_file(mask), "concat", "dpmpp", steps, 1.0, number * calls + call,
                            api_name="/generate")
        try:
            job.result(timeout=left)
            with results.lock:
                results.latencies_s.append(time.perf_counter() - tic)
        except concurrent.futures.TimeoutError:
            job.cancel()
            with results.lock:
                results.unfinished += calls - call
            return
        except Exception as exc:  # the app's refusal or a transport error: counted, the client goes on
            with results.lock:
                results.errors.append(f"{type(exc).__name__}: {exc}"[:200])


def mask_file(folder: Path) -> str:
    arr = np.zeros((128, 128), np.uint8)
    arr[60:68, :] = 255
    arr[:, 40:48] = 255
    path = folder / "mask.png"
    Image.fromarray(arr).save(path)
    return str(path)


def stats(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return float("nan"), float("nan"), float("nan")
    arr = np.asarray(values)
    return float(np.median(arr)), float(np.percentile(arr, 95)), float(arr.max())


def report(args: argparse.Namespace, results: Results, wall_s: float, rss_before: float | None) -> None:
    sent = args.clients * args.calls
    median, p95, worst = stats(results.latencies_s)
    print(f"\nload test: {args.clients} clients x {args.calls} calls of /generate (concat, dpmpp, {args.steps} steps, "
          f"tiny 16 px model) on 127.0.0.1; {os.cpu_count()} CPU cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    rows = [
        ("requests", f"{sent} sent, {len(results.latencies_s)} completed, {len(results.errors)} errors, "
                     f"{results.unfinished} not finished by the deadline"),
        ("latency per request", f"median {median:.2f} s, p95 {p95:.2f} s, max {worst:.2f} s (queueing included)"),
        ("throughput", f"{len(results.latencies_s) / wall_s:.2f} requests/s over {wall_s:.1f} s"),
        ("app memory (VmRSS)", f"{rss_before or float('nan'):.0f} MB before the load, peak "
                               f"{max(results.rss_mb, default=float('nan')):.0f} MB ({len(results.rss_mb)} samples)"),
    ]
    for path, values in results.probes_ms.items():
        med, _, top = stats(values)
        rows.append((f"GET {path}", f"median {med:.0f} ms, max {top:.0f} ms ({len(values)} during the load)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for error in sorted(set(results.errors))[:5]:
        print(f"  error: {error}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--calls", type=int, default=3, help="calls per client")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--timeout_s", type=float, default=300.0, help="the whole load, after the app started")
    p.add_argument("--weights-dir", default=None, help="models to serve (default: train a tiny one, ~20 s)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="retree_load_") as tmp:
        tmp = Path(tmp)
        weights_dir = Path(args.weights_dir) if args.weights_dir else None
        if weights_dir is None:
            import torch

            torch.set_num_threads(1)  # as in the tests: a tiny model trains no faster on a busy second core
            print("training a tiny concat model for the app…")
            weights_dir = export_tiny(train_tiny(tmp / "tiny_run"), tmp / "weights").parent
        mask = mask_file(tmp)
        with running_app(weights_dir, tmp) as url:
            pid = app_pid(int(url.rstrip("/").rsplit(":", 1)[1]))
            rss_before = rss_mb(pid)
            results, stop = Results(), threading.Event()
            helpers = [threading.Thread(target=sample_memory, args=(pid, results, stop), daemon=True),
                       threading.Thread(target=probe, args=(url, ["config", "gradio_api/info"], results, stop),
                                        daemon=True)]
            for thread in helpers:
                thread.start()
            tic = time.monotonic()
            deadline = tic + args.timeout_s
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                futures = [pool.submit(one_client, url, mask, args.calls, args.steps, n, deadline, results)
                           for n in range(args.clients)]
                for future in futures:
                    try:
                        future.result(timeout=max(1.0, deadline - time.monotonic() + 30))
                    except Exception as exc:  # a client that could not even connect
                        results.errors.append(f"client: {type(exc).__name__}: {exc}"[:200])
            wall_s = time.monotonic() - tic
            stop.set()
            for thread in helpers:
                thread.join(5)
    report(args, results, wall_s, rss_before)
    complete = len(results.latencies_s) == args.clients * args.calls and not results.errors
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
