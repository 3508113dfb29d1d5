"""Fault injection through the app: the process hosting a Train-tab training is SIGKILLed, then restarted
and the run resumed the way a user does it.

The app runs trainings in a thread of its own process, so a crash of the app is a crash of the training.
Each launch is a child process holding the app's event handlers (ui.Handlers over retree_studio.services,
as `python app.py` builds them) on one runs folder: the first calls Train tab > Start (role concat,
embedded data, preset tiny, 16 px, batch 2), later ones find the run in the Resume list and call Resume;
each then polls like the tab's timer. The child is SIGKILLed `--kills` times at a random moment once its
training has made progress, then a last launch resumes the run to the end. After every kill: last.ckpt
loads, the steps lost (last logged step - checkpoint step) are at most the checkpoint interval, and the
run is listed for Resume by the restarted app. At the end: log.jsonl holds steps 1..N exactly once,
the run's model.safetensors loads as a concat model and is offered in Generate, no temporary file is left.

    python bench/app_training_faults.py [--kills 5] [--steps 300] [--sample_every 25] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from retree_studio.catalog import RUN_MODEL_NAME  # noqa: E402
from training_faults import (  # noqa: E402
    Failure, checkpoint_step, last_logged_step, log_rows, temp_files, wait_or_kill, yes,
)

RUN = "faulted_run"
SESSION = SimpleNamespace(session_hash="fault-bench")


def app_handlers(root: Path):
    """The app's event handlers over the settings `python app.py --runs-dir root/runs ...` would use."""
    from retree_studio import ui
    from retree_studio.settings import StudioSettings
    from retree_studio.services import Studio

    settings = StudioSettings(weights_dir=root / "weights", runs_dir=root / "runs", work_dir=root / "work",
                              device="cpu", warm_up=False)
    (root / "weights").mkdir(exist_ok=True)
    return ui.Handlers(Studio(settings))


def child(root: Path, steps: int, sample_every: int) -> int:
    """One launch of the app: Start (first time) or Resume the run, then poll until it ends."""
    import torch

    torch.set_num_threads(1)
    handlers = app_handlers(root)
    if RUN in handlers.train_runs(SESSION)["choices"]:  # the Resume dropdown of the restarted app
        handlers.train_resume(RUN, steps, SESSION)
        print("resumed", flush=True)
    else:
        handlers.train_start("concat", "embedded", None, None, "tiny", 16, 2, steps, 1e-3, sample_every, RUN,
                             request=SESSION)
        print("started", flush=True)
    jobs = handlers.studio.jobs
    while jobs.snapshot().busy:
        handlers.train_poll(None, SESSION)  # what the Train tab's timer calls every second
        time.sleep(0.5)
    job = jobs.snapshot()
    print(f"{job.state} at step {job.step}: {job.message}", flush=True)
    return 0 if job.state == "finished" else 1


def launch(root: Path, steps: int, sample_every: int, console: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(console, "ab") as out:
        return subprocess.Popen([sys.executable, __file__, "--child", str(root), "--steps", str(steps),
                                 "--sample_every", str(sample_every)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)


def listed_for_resume(root: Path) -> bool:
    """Whether a freshly started app offers the run in the Train tab's Resume list."""
    return RUN in app_handlers(root).train_runs(SESSION)["choices"]


def run_faults(root: Path, kills: int, steps: int, sample_every: int, seed: int, budget_s: float) -> dict:
    rng = random.Random(seed)
    run_dir, console = root / "runs" / RUN, root / "console.txt"
    interval = max(1, min(sample_every, 250))  # the app's checkpoint interval (Handlers._train_cfg)
    deadline = time.perf_counter() + budget_s
    records = []
    while len(records) < kills:
        before = last_logged_step(run_dir)
        proc, tic = launch(root, steps, sample_every, console), time.perf_counter()
        wake = None
        while proc.poll() is None and time.perf_counter() < deadline:
            if wake is None and last_logged_step(run_dir) > before:  # training is under way again
                wake = time.perf_counter() + rng.uniform(0.0, 3.0)
            if wake is not None and time.perf_counter() >= wake:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        if proc.poll() is None and time.perf_counter() >= deadline:
            proc.kill()
            proc.wait()
            raise Failure("time budget spent")
        if proc.wait() != -signal.SIGKILL:
            raise Failure(f"launch {len(records) + 1} ended before the kill:\n{console.read_text()[-2000:]}")
        logged, ckpt = last_logged_step(run_dir), checkpoint_step(run_dir)
        records.append({"kill": len(records) + 1, "at_s": time.perf_counter() - tic, "logged": logged, "ckpt": ckpt,
                        "lost": logged - (ckpt or 0), "listed": listed_for_resume(root)})
    rc = wait_or_kill(launch(root, steps, sample_every, console), deadline)
    log = [r["step"] for r in log_rows(run_dir)]
    model_ok = False
    if (run_dir / RUN_MODEL_NAME).exists():
        from retree_core.weights import load_model

        model_ok = load_model(run_dir / RUN_MODEL_NAME, role="concat").net_cfg.image_size == 16
    offered = any(e.label.startswith(f"run: {RUN}") for e in app_handlers(root).studio.catalog.entries("concat"))
    figures = {
        "kills": records, "interval": interval, "final_rc": rc, "final_step": checkpoint_step(run_dir),
        "log_continuous": log == list(range(1, steps + 1)), "model_loads": model_ok, "offered": offered,
        "temps_left": len(temp_files(run_dir)),
    }
    figures["passed"] = (rc == 0 and all(k["ckpt"] is not None and k["lost"] <= interval for k in records)
                         and figures["final_step"] == steps and figures["log_continuous"] and model_ok and offered
                         and figures["temps_left"] == 0)
    return figures


def report(f: dict, total_s: float) -> None:
    print(f"{'kill':>4} {'t (s)':>6} {'step at kill':>12} {'ckpt step':>9} {'lost':>4} {'listed for Resume':>17}")
    for k in f["kills"]:
        ckpt = "CORRUPT" if k["ckpt"] is None else str(k["ckpt"])
        print(f"{k['kill']:>4} {k['at_s']:>6.1f} {k['logged']:>12} {ckpt:>9} {k['lost']:>4} {yes(k['listed']):>17}")
    lost = max((k["lost"] for k in f["kills"]), default=0)
    corrupt = sum(k["ckpt"] is None for k in f["kills"])
    print(f"\nmax steps lost: {lost} (checkpoint interval {f['interval']}); corrupt checkpoints: {corrupt}\n"
          f"final resume: exit {f['final_rc']}, step {f['final_step']}; "
          f"log.jsonl steps 1..N exactly once: {yes(f['log_continuous'])}\n"
          f"model.safetensors loads: {yes(f['model_loads'])}; offered in Generate: {yes(f['offered'])}; "
          f"temporary files left: {f['temps_left']}\n"
          f"total time: {total_s:.1f} s\n{'PASS' if f['passed'] else 'FAIL'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--sample_every", type=int, default=25, help="the Train tab's 'Sample grid every' "
                   "(it also sets the checkpoint interval)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget_s", type=float, default=400.0)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(Path(args.child), args.steps, args.sample_every)
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="retree_app_faults_") as tmp:
        try:
            figures = run_faults(Path(tmp), args.kills, args.steps, args.sample_every, args.seed, args.budget_s)
        except (Failure, ValueError) as exc:
            print(f"FAIL: {exc}")
            return 1
    report(figures, time.perf_counter() - tic)
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
