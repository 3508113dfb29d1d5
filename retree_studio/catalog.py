"""The models an app can offer: shipped weights, runs trained in the app, uploaded files; loaded once.

A model is listed by reading only its small JSON config (the safetensors header or the sidecar
`.json`), so listing is cheap; the tensors are read on first use and kept in a small cache.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from retree_core.checkpoint import CheckpointError
from retree_core.config import MAX_IMAGE_PX, NetConfig
from retree_core.superres import fits
from retree_core.weights import LoadedModel, load_model, read_model_info, recommended_guidance, style_guidance

RUN_MODEL_NAME = "model.safetensors"  # a run's exported weights, next to its last.ckpt
RUN_INFO_NAME = "run.json"  # a run's settings and owner, written by jobs.TrainingJobs


@dataclass(frozen=True)
class ModelEntry:
    """One selectable model: a label for people, a path for the loader."""

    label: str
    path: Path
    role: str
    image_size: int
    trained_steps: int | None
    kind: str  # shipped | run
    guidance: float  # recommended guidance scale (weights.recommended_guidance)
    styles: tuple[str, ...] = ()  # dataset styles it was trained with (NetConfig.styles)
    style_guidance: dict[str, float] = field(default_factory=dict, hash=False)  # styles recommended another scale
    sr_scale: int = NetConfig.sr_scale  # roles sr, treesr: the upscaling factor (input image_size / sr_scale)
    grain: bool = False  # role sr: camera grain measured for it (grain.py)

    def guidance_for(self, style: str) -> float:
        """The scale recommended for `style` (LoadedModel.guidance_for, read from the file's config only)."""
        return self.style_guidance.get(style, self.guidance)


def _entry(path: Path, kind: str, label: str) -> ModelEntry | None:
    info = read_model_info(path)
    try:
        net = info["net"]
        return ModelEntry(label, path, net["role"], int(net["image_size"]), info.get("trained_steps"), kind,
                          recommended_guidance(info, str(path)), tuple(map(str, net.get("styles") or ())),
                          style_guidance(info, str(path)), int(net.get("sr_scale", NetConfig.sr_scale)),
                          bool(info.get("grain")))
    except (TypeError, KeyError, ValueError):
        return None


def run_owner(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / RUN_INFO_NAME).read_text()).get("owner")
    except (OSError, ValueError):
        return None


class ModelCatalog:
    """Lists models by role and loads them on demand (a few kept in memory, keyed by file and mtime)."""

    def __init__(self, weights_dir: Path, runs_dir: Path, device: str = "cpu", precision: str = "fp32",
                 cache_size: int = 3, max_upload_px: int = MAX_IMAGE_PX):
        self.weights_dir, self.runs_dir, self.device = Path(weights_dir), Path(runs_dir), device
        self.precision, self.max_upload_px = precision, max_upload_px
        self._cache: OrderedDict[tuple[str, float], LoadedModel] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def entries(self, role: str | None = None, owner: str | None = None, hosted: bool = False) -> list[ModelEntry]:
        """Shipped models first (by name), then runs (newest first). When hosted, a run is listed only
        to the session that started it."""
        found: list[ModelEntry] = []
        if self.weights_dir.is_dir():
            for path in sorted(self.weights_dir.glob("*.safetensors")):
                entry = _entry(path, "shipped", path.stem)
                if entry:
                    found.append(entry)
        if self.runs_dir.is_dir():
            runs = sorted((p for p in self.runs_dir.glob(f"*/{RUN_MODEL_NAME}")),
                          key=lambda p: p.stat().st_mtime, reverse=True)
            for path in runs:
                if hosted and run_owner(path.parent) != owner:
                    continue
                steps = (read_model_info(path) or {}).get("trained_steps")
                label = f"run: {path.parent.name}" + (f" ({steps} steps)" if steps is not None else "")
                entry = _entry(path, "run", label)
                if entry:
                    found.append(entry)
        return [e for e in found if role is None or e.role == role]

    def default(self, role: str, owner: str | None = None, hosted: bool = False) -> ModelEntry | None:
        """The model named after its role (weights/concat.safetensors) if shipped, else the first listed."""
        entries = self.entries(role, owner, hosted)
        named = [e for e in entries if e.kind == "shipped" and e.path.stem == role]
        return (named or entries or [None])[0]

    def find(self, label: str, role: str, owner: str | None = None, hosted: bool = False) -> ModelEntry | None:
        return next((e for e in self.entries(role, owner, hosted) if e.label == label), None)

    def load(self, path: str | Path, role: str | None = None, uploaded: bool = False) -> LoadedModel:
        """A ready model; raises CheckpointError (a ValueError) with a readable message. An `uploaded` file
        may declare images up to `max_upload_px` only."""
        path = Path(path)
        try:
            key = (str(path.resolve()), path.stat().st_mtime)
        except OSError:
            key = (str(path), 0.0)
        with self._lock:
            model = self._cache.get(key)
            if model is None:
                model = load_model(path, role=role, device=self.device, precision=self.precision,
                                   max_image_px=self.max_upload_px if uploaded else MAX_IMAGE_PX)
                self._cache[key] = model
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
        if role is not None and model.net_cfg.role != role:
            raise CheckpointError(f"{path.name}: this is a {model.net_cfg.role!r} model, "
                                  f"but a {role!r} model is needed")
        return model

    def stage_one(self, owner: str | None = None, hosted: bool = False,
                  on_problem: Callable[[str], None] = print) -> LoadedModel | None:
        """The default vessel model, with the default treesr model enlarging its trees where that takes its
        size (as `generate --tree_sr auto`); None when there is no vessel model. A treesr file that does not
        load leaves the trees to the cut (tree_ops.cut_tree), and `on_problem` gets the reason."""
        entry, tree_entry = self.default("vessel", owner, hosted), self.default("treesr", owner, hosted)
        if entry is None:
            return None
        vessel = self.load(entry.path, "vessel")
        try:
            tree_sr = None if tree_entry is None else self.load(tree_entry.path, "treesr")
        except ValueError as exc:  # CheckpointError included
            on_problem(f"The tree super-resolution model did not load ({exc}); trees are cut without it.")
            tree_sr = None
        return replace(vessel, tree_sr=tree_sr) if fits(tree_sr, vessel.net_cfg.image_size) else vessel


__all__ = ["ModelEntry", "ModelCatalog", "read_model_info", "run_owner", "RUN_MODEL_NAME", "RUN_INFO_NAME"]
