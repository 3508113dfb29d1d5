"""The long-lived objects an app shares between all its sessions: settings, the model catalog, the
training jobs and the per-session stop signals; plus a start-up warm-up so the first Run is fast."""
from __future__ import annotations

import contextlib
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from retree_core import compute
from retree_core.pipeline import generate
from retree_core.segmentation import LearnedSegmenter
from retree_core.superres import shipped_path

from .catalog import ModelCatalog
from .jobs import TrainingJobs
from .live import StopSignals
from .settings import StudioSettings

OUTPUT_MAX_AGE_S = 2 * 3600  # downloads are kept this long after a session last wrote one


def _size_and_age(folder: Path) -> tuple[float, float]:
    """(MiB held, last change time) of a folder; files vanishing meanwhile are skipped."""
    size, mtime = 0, folder.stat().st_mtime
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                size += p.stat().st_size
    return size / 2**20, mtime


def trim_folder(parent: Path, max_mb: float | None, keep: set[str] = frozenset()) -> list[str]:
    """Remove the least recently changed subfolders of `parent` (except those named in `keep`) until
    it holds at most `max_mb`; returns the names removed. None: no quota."""
    if max_mb is None or not parent.is_dir():
        return []
    found = {}
    for folder in parent.iterdir():
        with contextlib.suppress(OSError):
            if folder.is_dir():
                found[folder] = _size_and_age(folder)
    total, removed = sum(size for size, _ in found.values()), []
    for folder, (size, _) in sorted(found.items(), key=lambda item: item[1][1]):
        if total <= max_mb:
            break
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed.append(folder.name)
    return removed


@dataclass
class Studio:
    settings: StudioSettings
    catalog: ModelCatalog = field(init=False)
    jobs: TrainingJobs = field(init=False)
    stops: StopSignals = field(default_factory=StopSignals)

    def __post_init__(self) -> None:
        compute.use_one_thread()  # requests arrive on many threads; tensor work runs on one (compute.py)
        s = self.settings
        self.catalog = ModelCatalog(s.weights_dir, s.runs_dir, s.device, s.precision, max_upload_px=s.max_model_px)
        self.jobs = TrainingJobs(s.runs_dir, s.device, hosted=s.hosted, max_minutes=s.max_train_minutes)
        for folder in (s.runs_dir, s.dataset_dir, s.output_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if s.hosted:  # gradio decodes canvas layers with PIL before any of our checks: bound that too
            Image.MAX_IMAGE_PIXELS = min(Image.MAX_IMAGE_PIXELS or s.max_mask_pixels, s.max_mask_pixels)

    def session_dir(self, session: str) -> Path:
        """A folder for one session's downloads (session ids are server-made hex strings). Folders
        untouched for `OUTPUT_MAX_AGE_S` or beyond the disk quota are removed on the way."""
        safe = "".join(c for c in session if c.isalnum())[:64] or "anonymous"
        self.prune_outputs(keep=safe)
        folder = self.settings.output_dir / safe
        folder.mkdir(parents=True, exist_ok=True)
        folder.touch()
        return folder

    def prune_outputs(self, max_age_s: float = OUTPUT_MAX_AGE_S, keep: str | None = None) -> None:
        """Remove download folders untouched for `max_age_s`, then the oldest beyond the disk quota."""
        now = time.time()
        for folder in self.settings.output_dir.iterdir():
            try:
                if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass
        trim_folder(self.settings.output_dir, self.settings.max_outputs_mb, keep={keep} if keep else set())

    def prune_runs(self, keep: str | None = None) -> list[str]:
        """Remove the oldest training runs beyond the disk quota (never `keep` or the one training now)."""
        job = self.jobs.snapshot()
        return trim_folder(self.settings.runs_dir, self.settings.max_runs_mb,
                           keep={keep, job.run_name if job.busy else None} - {None})

    def segmenter(self):
        """The shipped vessel segmenter (weights/segment) with its threshold, or None (the app then
        measures mask fidelity with the classical ridge filter)."""
        entry = self.catalog.default("segment")
        if entry is None or entry.kind != "shipped":
            return None
        return LearnedSegmenter.from_file(self.catalog.load(entry.path, "segment"), entry.path)

    def super_resolution(self, image_px: int):
        """The shipped super-resolution model that takes `image_px` images (superres.shipped_path), else None."""
        path = shipped_path("sr", image_px, self.catalog.weights_dir)
        return None if path is None else self.catalog.load(path, "sr")

    def warm_up(self, background: bool = True) -> threading.Thread | None:
        """Load the default concat model and run one denoising step (first-call costs paid up front)."""
        def work() -> None:
            entry = self.catalog.default("concat")
            if entry is None:
                return
            try:
                model = self.catalog.load(entry.path, "concat")
                size = model.net_cfg.image_size
                mask = np.zeros((size, size), bool)
                mask[size // 2] = True
                generate(model, mask, [0], sampler="ddim", steps=1)
            except Exception as exc:  # a broken file is reported when someone selects it
                print(f"warm-up skipped: {exc}")

        if not background:
            work()
            return None
        thread = threading.Thread(target=work, daemon=True, name="warm-up")
        thread.start()
        return thread


__all__ = ["Studio"]
