"""Fault injection for training: SIGKILL a tiny training run at random moments and resume it.

Runs `python -m retree_core train --mode concat --preset tiny --image_size 16 ... --resume` as a
subprocess, kills it with SIGKILL at `--kills` random moments (some aimed at a checkpoint write: a tight
poll for the temporary file `.last.ckpt.*.tmp` that `atomic_write` renames over `last.ckpt`, the kill
sent the moment it appears), then relaunches the same command until the run completes. A kill counts
as "during a write" when the killed process left its temporary file behind. Checks, after every kill:
`last.ckpt` loads (no corrupt checkpoint) and holds a step at most one checkpoint interval behind the
last logged step; at the end: the log's steps are exactly 1..N with the losses of an uninterrupted run
(run first, same command), the final model, EMA and optimiser equal that run's bit for bit, and no
temporary file is left. Prints a table and the figures; exits 1 if any property fails.

    python bench/training_faults.py [--kills 10] [--min_write_kills 3] [--max_steps 200]
                                    [--checkpoint_interval 10] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retree_core.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint  # noqa: E402
from retree_core.train import LOG_NAME  # noqa: E402

TEMP_PREFIX, TEMP_SUFFIX = f".{CHECKPOINT_NAME}.", ".tmp"  # atomic_write's temporary file
POLL_S = 0.0002  # tight poll while waiting for a checkpoint write (it takes ~10 ms here)


class Failure(RuntimeError):
    """The run could not be driven as planned (a launch failed, the time budget ran out)."""


@dataclass
class Kill:
    """What one SIGKILL hit and what it left on disk."""

    number: int
    aimed: str  # "start-up", "random" (a random moment in training) or "write" (at the temporary file)
    at_s: float  # seconds after this launch
    logged_step: int  # last step in log.jsonl at the kill
    ckpt_step: int | None  # step in last.ckpt after the kill; None: corrupt
    during_write: bool  # the killed process left its temporary checkpoint file behind
    temps_on_disk: int  # temporary checkpoint files in the output folder after the kill

    @property
    def lost(self) -> int:
        return self.logged_step - (self.ckpt_step or 0)


@dataclass
class Timing:
    """Measured on the uninterrupted run; scales the random delays to this machine's speed."""

    startup_s: float  # launch to the first logged step
    step_s: float  # seconds per training step
    total_s: float


def train_command(out: Path, steps: int, interval: int) -> list[str]:
    return [sys.executable, "-m", "retree_core", "train", "--mode", "concat", "--preset", "tiny",
            "--image_size", "16", "--max_steps", str(steps), "--checkpoint_interval", str(interval),
            "--output_dir", str(out), "--resume", "--no_progress"]


def launch(out: Path, steps: int, interval: int, console: Path) -> subprocess.Popen:
    """Start one training process; its stdout and stderr go to `console` (no pipe to fill up)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with open(console, "ab") as f:
        return subprocess.Popen(train_command(out, steps, interval), stdout=f, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)


def temp_files(out: Path) -> set[str]:
    """Names of temporary checkpoint files in the output folder."""
    try:
        return {n for n in os.listdir(out) if n.startswith(TEMP_PREFIX) and n.endswith(TEMP_SUFFIX)}
    except FileNotFoundError:
        return set()


def log_rows(out: Path) -> list[dict[str, Any]]:
    path = out / LOG_NAME
    return [json.loads(r) for r in path.read_text().splitlines() if r.strip()] if path.exists() else []


def last_logged_step(out: Path) -> int:
    rows = log_rows(out)
    return int(rows[-1]["step"]) if rows else 0


def checkpoint_step(out: Path) -> int | None:
    """Step of last.ckpt (0 when there is none yet), None when it does not load."""
    if not (out / CHECKPOINT_NAME).exists():
        return 0
    try:
        return int(load_checkpoint(out / CHECKPOINT_NAME)["step"])
    except CheckpointError:
        return None


def console_tail(console: Path, chars: int = 2000) -> str:
    return console.read_text(errors="replace")[-chars:] if console.exists() else ""


def reference_run(out: Path, steps: int, interval: int, console: Path, deadline: float) -> Timing:
    """The uninterrupted run, watched to measure start-up time and step time."""
    tic = time.perf_counter()
    proc = launch(out, steps, interval, console)
    first = None
    while proc.poll() is None:
        if time.perf_counter() > deadline:
            proc.kill()
            proc.wait()
            raise Failure("time budget spent in the uninterrupted run")
        if first is None and (out / LOG_NAME).exists() and (out / LOG_NAME).stat().st_size:
            first = time.perf_counter() - tic
        time.sleep(0.02)
    total = time.perf_counter() - tic
    if proc.returncode != 0:
        raise Failure(f"uninterrupted run failed (rc {proc.returncode}):\n{console_tail(console)}")
    first = first if first is not None else total
    return Timing(startup_s=first, step_s=max(total - first, 1e-3) / steps, total_s=total)


def banners(console: Path) -> int:
    """How many launches have printed their "training ..." line (after the resume, before step 1)."""
    if not console.exists():
        return 0
    return sum(line.startswith("training ") for line in console.read_text(errors="replace").splitlines())


def kill_once(number: int, aim: str, out: Path, steps: int, interval: int, timing: Timing,
              rng: random.Random, console: Path, deadline: float) -> Kill | None:
    """Launch the run, SIGKILL it, inspect what is on disk. `aim`: "start-up" (a random delay after
    launch, before training starts), "random" (a random delay into training) or "write" (a random
    delay into training, then the first checkpoint write). None: the run finished before the kill."""
    before, started = temp_files(out), banners(console)
    proc = launch(out, steps, interval, console)
    tic = time.perf_counter()
    cycle = interval * timing.step_s  # time between two checkpoint writes
    wake = tic + rng.uniform(0.3, 0.8 * timing.startup_s) if aim == "start-up" else None
    offset = rng.uniform(0, cycle if aim == "write" else 2 * cycle)
    at_s = None
    try:
        while proc.poll() is None:
            now = time.perf_counter()
            if now > deadline:
                raise Failure("time budget spent")
            if wake is None and banners(console) > started:
                wake = now + offset
            armed = wake is not None and now >= wake
            if armed and (aim != "write" or temp_files(out) - before or now > wake + 3 * cycle + 5):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(POLL_S if armed else 0.005)
        at_s = time.perf_counter() - tic
    finally:
        if at_s is None:  # interrupted (budget spent, Ctrl-C): leave no process behind
            proc.kill()
            proc.wait()
    rc = proc.wait()
    if rc != -signal.SIGKILL:
        if rc == 0:
            return None
        raise Failure(f"launch {number} failed (rc {rc}):\n{console_tail(console)}")
    return Kill(number=number, aimed=aim, at_s=at_s, logged_step=last_logged_step(out),
                ckpt_step=checkpoint_step(out), during_write=bool(temp_files(out) - before),
                temps_on_disk=len(temp_files(out)))


def same_state(a: Any, b: Any) -> bool:
    """Bitwise equality of nested dicts / lists of tensors and numbers."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def wait_or_kill(proc: subprocess.Popen, deadline: float) -> int:
    """Wait for `proc` to end until `deadline` (a perf_counter time); past it, kill it and fail."""
    try:
        return proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise Failure("time budget spent in the final resume") from None


def finish(out: Path, steps: int, interval: int, console: Path, deadline: float) -> None:
    """The last launch: resume and run to the end, unharmed."""
    rc = wait_or_kill(launch(out, steps, interval, console), deadline)
    if rc != 0:
        raise Failure(f"final resume failed (rc {rc}):\n{console_tail(console)}")


def judge(kills: list[Kill], ref_dir: Path, out: Path, steps: int, interval: int) -> dict[str, Any]:
    """The properties of a finished faulted run against the uninterrupted one in `ref_dir`."""
    ref_log, log = log_rows(ref_dir), log_rows(out)
    ref, got = load_checkpoint(ref_dir / CHECKPOINT_NAME), load_checkpoint(out / CHECKPOINT_NAME)
    f = {
        "kills": len(kills),
        "kills_during_write": sum(k.during_write for k in kills),
        "max_lost": max((k.lost for k in kills), default=0),
        "interval": interval,
        "corrupt": sum(k.ckpt_step is None for k in kills),
        "ckpt_ahead_of_log": sum(k.ckpt_step is not None and k.ckpt_step > k.logged_step for k in kills),
        "max_temps_on_disk": max((k.temps_on_disk for k in kills), default=0),
        "temps_left": len(temp_files(out)),
        "log_continuous": [r["step"] for r in log] == list(range(1, steps + 1)),
        "log_losses_equal": [r["loss"] for r in log] == [r["loss"] for r in ref_log],
        "final_step": int(got["step"]),
        "state_equal": all(same_state(ref[k], got[k]) for k in ("model", "ema", "optimizer")),
    }
    f["passed"] = (f["corrupt"] == 0 and f["max_lost"] <= interval and f["ckpt_ahead_of_log"] == 0
                   and f["temps_left"] == 0 and f["log_continuous"] and f["log_losses_equal"]
                   and f["final_step"] == steps and f["state_equal"])
    return f


def run_faults(work: Path, kills: int = 10, min_write_kills: int = 3, steps: int = 200, interval: int = 10,
               seed: int = 0, budget_s: float = 280.0, max_retries: int = 5) -> dict[str, Any]:
    """The whole experiment in `work`: an uninterrupted run, then the killed-and-resumed one (kills
    aimed at writes until `min_write_kills` landed in one, up to `max_retries` beyond `kills`).
    Returns the kills and the figures; `figures["passed"]` says whether every property holds."""
    tic = time.perf_counter()
    deadline = tic + budget_s
    rng = random.Random(seed)
    ref_dir, out, console = work / "uninterrupted", work / "faulted", work / "console.txt"
    timing = reference_run(ref_dir, steps, interval, console, deadline)

    records: list[Kill] = []
    finished_early = False
    while len(records) < kills + max_retries:
        need = min_write_kills - sum(k.during_write for k in records)
        left = kills - len(records)
        if left <= 0 and need <= 0:
            break
        if need > 0 and (left <= need or rng.random() < 0.5):
            aim = "write"
        else:
            aim = "start-up" if rng.random() < 0.2 else "random"
        kill = kill_once(len(records) + 1, aim, out, steps, interval, timing, rng, console, deadline)
        if kill is None:
            finished_early = True
            break
        records.append(kill)
    finish(out, steps, interval, console, deadline)

    f = judge(records, ref_dir, out, steps, interval)
    f.update(timing=timing, finished_early=finished_early, total_s=time.perf_counter() - tic)
    f["passed"] = (f["passed"] and not finished_early and f["kills"] >= kills
                   and f["kills_during_write"] >= min_write_kills)
    return {"kills": records, "figures": f}


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def report(result: dict[str, Any], min_write_kills: int) -> None:
    """Print the per-kill table and the summary figures."""
    print(f"{'kill':>4} {'aimed':>8} {'t (s)':>6} {'step at kill':>12} {'ckpt step':>9} {'lost':>4} "
          f"{'during write':>12} {'.tmp on disk':>12}")
    for k in result["kills"]:
        ckpt = "CORRUPT" if k.ckpt_step is None else str(k.ckpt_step)
        print(f"{k.number:>4} {k.aimed:>8} {k.at_s:>6.2f} {k.logged_step:>12} {ckpt:>9} {k.lost:>4} "
              f"{yes(k.during_write):>12} {k.temps_on_disk:>12}")
    f = result["figures"]
    t = f["timing"]
    print(f"\nuninterrupted run: {t.total_s:.1f} s (start-up {t.startup_s:.1f} s, {1000 * t.step_s:.0f} ms/step)")
    print(f"kills: {f['kills']}{' (the run finished before all kills landed)' if f['finished_early'] else ''}")
    print(f"kills during a checkpoint write: {f['kills_during_write']} (required >= {min_write_kills})")
    print(f"max steps lost: {f['max_lost']} (checkpoint interval {f['interval']})")
    print(f"corrupt checkpoints: {f['corrupt']}; checkpoints ahead of the log: {f['ckpt_ahead_of_log']}")
    print(f"temporary checkpoint files: at most {f['max_temps_on_disk']} on disk after a kill, "
          f"{f['temps_left']} left at the end")
    print(f"log continuous (steps 1..N, no gaps or duplicates): {yes(f['log_continuous'])}; "
          f"losses equal to the uninterrupted run: {yes(f['log_losses_equal'])}")
    print(f"final step: {f['final_step']}; final model/EMA/optimiser equal to the uninterrupted run "
          f"(bitwise): {yes(f['state_equal'])}")
    print(f"total time: {f['total_s']:.1f} s")
    print("PASS" if f["passed"] else "FAIL")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--min_write_kills", type=int, default=3, help="kills that must land in a checkpoint write")
    p.add_argument("--max_steps", type=int, default=200)
    p.add_argument("--checkpoint_interval", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget_s", type=float, default=280.0, help="give up (and fail) after this long")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="retree_faults_") as tmp:
        try:
            result = run_faults(Path(tmp), args.kills, args.min_write_kills, args.max_steps,
                                args.checkpoint_interval, args.seed, args.budget_s)
        except (Failure, ValueError) as exc:  # ValueError: a torn log row, an unreadable final checkpoint
            print(f"FAIL: {exc}")
            return 1
    report(result, args.min_write_kills)
    return 0 if result["figures"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
