"""Background training for an app: one run at a time, started, stopped and resumed from a UI.

A run lives in `runs_dir/NAME/`: the engine's `last.ckpt`, `log.jsonl` and `samples/`, plus
`run.json` (its settings and who started it) and, once it ends or is stopped, `model.safetensors`
(its EMA weights, which the model catalog lists). The UI polls `snapshot()` for loss rows, speed,
ETA and the newest sample grid.
"""
from __future__ import annotations

import hashlib
import json
import re
import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from retree_core.checkpoint import CHECKPOINT_NAME, atomic_write
from retree_core.config import TrainConfig, from_dict, to_dict
from retree_core.segmentation import export_run
from retree_core.train import LOG_NAME, train

from .catalog import RUN_INFO_NAME, RUN_MODEL_NAME, run_owner
from .options import readable

BUSY_STATES = ("preparing", "running", "stopping")
RATE_WINDOW = 50  # steps over which speed and ETA are measured
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RUN_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,71}$")  # a name and its session tag


class TrainingBusy(RuntimeError):
    """A training is already running; the message says which and what to do."""


@dataclass
class JobSnapshot:
    """What the UI shows about the current (or last) run; a copy, safe to read without locks."""

    state: str = "idle"  # idle | preparing | running | stopping | finished | stopped | failed
    run_name: str | None = None
    owner: str | None = None
    role: str | None = None
    step: int = 0
    total_steps: int = 0
    rows: list[dict] = field(default_factory=list)
    images_per_s: float | None = None
    eta_s: float | None = None
    message: str = ""
    sample_path: Path | None = None
    weights_path: Path | None = None

    @property
    def busy(self) -> bool:
        return self.state in BUSY_STATES


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def speed_and_eta(rows: list[dict], total_steps: int) -> tuple[float | None, float | None]:
    """(images per second, seconds left) from the recent rows' wall-clock times (sample grids included)."""
    timed = [r for r in rows[-RATE_WINDOW:] if "wall_s" in r]
    ips = statistics.median(r["images_per_s"] for r in rows[-20:]) if rows else None
    if len(timed) < 2 or timed[-1]["wall_s"] <= timed[0]["wall_s"]:
        return ips, None
    steps_per_s = (timed[-1]["step"] - timed[0]["step"]) / (timed[-1]["wall_s"] - timed[0]["wall_s"])
    return ips, max(0.0, (total_steps - timed[-1]["step"]) / steps_per_s) if steps_per_s > 0 else None


def read_log(run_dir: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (run_dir / LOG_NAME).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def newest_sample(run_dir: Path) -> Path | None:
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    return grids[-1] if grids else None


def _busy_text(job: JobSnapshot, owner: str | None, may_stop: bool) -> str:
    who = "in this session" if owner is not None and job.owner == owner else "in another session"
    return (f"A training is already running: run '{job.run_name}' ({job.role}), step {job.step} of "
            f"{job.total_steps}, started {who}. One training at a time on this machine: "
            + ("wait for it to finish or press Stop." if may_stop else "please wait for it to finish."))


class TrainingJobs:
    """Runs `train.train` in a background thread, one run at a time."""

    def __init__(self, runs_dir: str | Path, device: str = "cpu", hosted: bool = False,
                 max_minutes: float | None = None):
        """hosted: runs are private to the session (owner) that started them: only it lists, resumes
        and stops them. max_minutes: every run (and every resumption) ends after this much wall time."""
        self.runs_dir, self.device, self.hosted = Path(runs_dir), device, hosted
        self.max_minutes = max_minutes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._job = JobSnapshot()

    # --- queries -------------------------------------------------------------------------------
    def snapshot(self) -> JobSnapshot:
        with self._lock:
            job = replace(self._job, rows=list(self._job.rows))
        if job.run_name:
            job.sample_path = newest_sample(self.runs_dir / job.run_name)
        job.images_per_s, job.eta_s = speed_and_eta(job.rows, job.total_steps)
        if job.state != "running":
            job.eta_s = None
        return job

    def busy_message(self, owner: str | None = None) -> str:
        with self._lock:
            return _busy_text(self._job, owner, self._may_control(owner))

    def _may_control(self, owner: str | None) -> bool:
        return not self.hosted or self._job.owner == owner

    def runs(self, owner: str | None = None) -> list[str]:
        """Names of runs that can be resumed (they have a checkpoint), newest first."""
        if not self.runs_dir.is_dir():
            return []
        found = sorted((p.parent for p in self.runs_dir.glob(f"*/{CHECKPOINT_NAME}")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        return [p.name for p in found if (p / RUN_INFO_NAME).exists() and (not self.hosted or run_owner(p) == owner)]

    def run_config(self, name: str) -> TrainConfig:
        try:
            info = json.loads((self.runs_dir / name / RUN_INFO_NAME).read_text())
            return from_dict(TrainConfig, info["train"])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"run '{name}' has no readable settings ({exc})") from None

    def folder_name(self, name: str, owner: str | None) -> str:
        """The folder of a run called `name`: hosted, with a tag of its session, so that one session's
        names neither collide with nor reveal another's."""
        tag = f"-{hashlib.sha256(str(owner).encode()).hexdigest()[:6]}" if self.hosted else ""
        if tag and name.endswith(tag) and RUN_FOLDER.match(name):
            return name
        if not RUN_NAME.match(name or ""):
            raise ValueError("run name: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit")
        return name + tag

    # --- control -------------------------------------------------------------------------------
    def start(self, cfg: TrainConfig, run_name: str, owner: str | None = None, data_note: str = "") -> JobSnapshot:
        """Start a new run in `runs_dir/run_name` (a `folder_name`); raises TrainingBusy, or ValueError for
        bad options."""
        if self.folder_name(run_name, owner) != run_name:
            raise ValueError(f"run name {run_name!r} is not a run folder of this session")
        run_dir = self.runs_dir / run_name
        if (run_dir / CHECKPOINT_NAME).exists():
            raise ValueError(f"a run named '{run_name}' exists already: resume it or choose another name")
        cfg = replace(cfg, output_dir=str(run_dir), resume=False, progress=False, device=self.device,
                      max_minutes=self._budget(cfg.max_minutes))
        cfg.net()  # invalid preset / size combinations fail here, before anything is written
        return self._launch(cfg, run_name, owner, data_note, rows=[])

    def resume(self, run_name: str, max_steps: int, owner: str | None = None) -> JobSnapshot:
        """Continue a run from its checkpoint up to `max_steps` in total."""
        run_dir = self.runs_dir / run_name
        if not (run_dir / CHECKPOINT_NAME).exists():
            raise ValueError(f"run '{run_name}' has no checkpoint to resume from")
        if self.hosted and run_owner(run_dir) != owner:
            raise ValueError(f"run '{run_name}' was started in another session")
        rows = read_log(run_dir)
        done = rows[-1]["step"] if rows else 0
        if max_steps <= done:
            raise ValueError(f"run '{run_name}' has done {done} steps already: set Steps above {done} to continue")
        saved = self.run_config(run_name)
        cfg = replace(saved, max_steps=int(max_steps), resume=True, progress=False, output_dir=str(run_dir),
                      device=self.device, max_minutes=self._budget(saved.max_minutes))
        return self._launch(cfg, run_name, owner, None, rows=rows)

    def _budget(self, minutes: float | None) -> float | None:
        """A run's wall-time budget under this server's cap."""
        caps = [m for m in (minutes, self.max_minutes) if m is not None]
        return min(caps) if caps else None

    def stop(self, owner: str | None = None) -> JobSnapshot:
        """Ask the running training to stop after its current step (it checkpoints and exports)."""
        with self._lock:
            if self._job.state not in BUSY_STATES:
                raise ValueError("no training is running")
            if not self._may_control(owner):
                raise ValueError("this training was started in another session; only that session can stop it")
            self._job.state = "stopping"
            self._job.message = "stopping after the current step…"
            self._stop.set()
        return self.snapshot()

    def release(self, owner: str | None) -> bool:
        """Stop the running training if `owner` started it (its page was closed: nobody else may stop
        it, so it would hold the only slot); True if one was asked to stop."""
        with self._lock:
            if self._job.state not in BUSY_STATES or self._job.owner != owner:
                return False
            self._job.state, self._job.message = "stopping", "stopping: the page that started it was closed…"
            self._stop.set()
        return True

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the background run ends; True if it did (for tests and shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    # --- the background thread ---------------------------------------------------------------
    def _launch(self, cfg: TrainConfig, run_name: str, owner: str | None, data_note: str | None,
                rows: list[dict]) -> JobSnapshot:
        with self._lock:
            if self._job.state in BUSY_STATES:
                raise TrainingBusy(_busy_text(self._job, owner, self._may_control(owner)))
            self._stop.clear()
            total = cfg.max_steps if cfg.max_steps is not None else 0
            self._job = JobSnapshot("preparing", run_name, owner, cfg.mode, rows[-1]["step"] if rows else 0,
                                    total, rows, message="preparing the data and the network…")
            run_dir = Path(cfg.output_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            if data_note is not None:
                info = {"name": run_name, "owner": owner, "data": data_note, "created": time.time(),
                        "train": to_dict(cfg)}
                atomic_write(run_dir / RUN_INFO_NAME, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
            self._thread = threading.Thread(target=self._work, args=(cfg, run_dir), daemon=True,
                                            name=f"train-{run_name}")
            self._thread.start()
        return self.snapshot()

    def _on_log(self, row: dict) -> None:
        row = {**row, "wall_s": time.monotonic()}
        with self._lock:
            rows = self._job.rows
            while rows and rows[-1]["step"] >= row["step"]:  # a resumed run rewrites the tail
                rows.pop()
            rows.append(row)
            self._job.step = row["step"]
            if self._job.state == "preparing":
                self._job.state, self._job.message = "running", "training"

    def _work(self, cfg: TrainConfig, run_dir: Path) -> None:
        try:
            ckpt = train(cfg, on_log=self._on_log, should_stop=self._stop.is_set)
            weights = None
            if ckpt.exists():
                weights = export_run(ckpt, run_dir / RUN_MODEL_NAME)
            with self._lock:
                stopped = self._stop.is_set() and self._job.step < self._job.total_steps
                self._job.state = "stopped" if stopped else "finished"
                self._job.weights_path = weights
                done = f"{'stopped' if stopped else 'finished'} at step {self._job.step}"
                where = "Evaluate" if cfg.mode == "segment" else "Generate"
                self._job.message = (f"{done}; the model is selectable in {where} as 'run: {run_dir.name}'"
                                     if weights else f"{done}; nothing to save yet")
        except Exception as exc:  # reported in the UI; the traceback goes to the server log only
            traceback.print_exc()
            with self._lock:
                self._job.state = "failed"
                self._job.message = (f"training failed: {readable(exc)}" if isinstance(exc, ValueError) else
                                     f"training failed: {type(exc).__name__}: {readable(exc)}")  # no server paths


def loss_curve(rows: list[dict], max_points: int = 400, smoothing: float = 0.95) -> list[dict]:
    """Plot rows {step, loss, series}: the raw loss (averaged into at most `max_points` bins) and an
    exponentially smoothed curve (bias-corrected, so it starts at the first losses, not at zero)."""
    if not rows:
        return []
    out, smooth, ema = [], [], 0.0
    for i, r in enumerate(rows, 1):
        ema = smoothing * ema + (1 - smoothing) * r["loss"]
        smooth.append(ema / (1 - smoothing ** i))
    bin_size = max(1, -(-len(rows) // max_points))
    for start in range(0, len(rows), bin_size):
        chunk = rows[start:start + bin_size]
        step = chunk[-1]["step"]
        out.append({"step": step, "loss": statistics.fmean(r["loss"] for r in chunk), "series": "loss"})
        out.append({"step": step, "loss": smooth[start + len(chunk) - 1], "series": "smoothed"})
    return out


__all__ = ["TrainingJobs", "TrainingBusy", "JobSnapshot", "BUSY_STATES", "speed_and_eta", "format_duration",
           "read_log", "newest_sample", "loss_curve"]
