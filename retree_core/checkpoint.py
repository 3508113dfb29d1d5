"""Training checkpoints: one file with everything needed to continue a run exactly, written atomically.

A checkpoint holds only tensors, numbers, strings and dicts of them, so it loads with
`torch.load(weights_only=True)`: no arbitrary objects are ever unpickled.
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "last.ckpt"


class CheckpointError(ValueError):
    """A checkpoint or weight file that cannot be used, with the reason."""


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path`: readers see the old file or the new one,
    never half of one, even if the process is killed mid-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temporary files `atomic_write` left beside `path` when a process was killed mid-write
    (the `finally` never ran), so that repeated kills do not pile them up. Call it only where nothing
    else is writing `path`, e.g. when a training run starts on its output folder. Returns what went."""
    path = Path(path)
    prefix = f".{path.name}."
    if not path.parent.is_dir():
        return []
    stale = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training state dict (model, ema, optimizer, step, configs, rng) atomically."""
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def _load_failure(exc: Exception) -> str:
    """Why torch.load refused a file, in one line (its own messages run to paragraphs of advice)."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return f"it holds the Python object {found.group(1)}, refused: only tensors, numbers and strings are loaded"
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(
            ("Weights only load failed", "Please file an issue", "Check the documentation"))]
        return f"not a file of tensors and numbers: {lines[0] if lines else 'unknown content'}"
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _check_stored(path: Path) -> None:
    """Refuse a zip file with compressed entries before torch.load inflates them in full: torch.save writes
    every entry stored, so a compressed one can only be a file made to inflate to many times its size (a
    0.3 MB file of DEFLATE entries took 287 MB). Stored entries cannot outgrow the file. Files that are not
    zips are left to torch.load, which refuses them with its own reason."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            compressed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # a damaged zip: torch.load names the problem
    if compressed:
        raise CheckpointError(f"{path}: not a readable ReTree checkpoint ({len(compressed)} compressed entries, "
                              f"e.g. {compressed[0]}: torch.save never compresses; refused before inflating)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, refusing pickled objects and compressed entries."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    _check_stored(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, wrong format, pickled objects
        raise CheckpointError(f"{path}: not a readable ReTree checkpoint ({_load_failure(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a ReTree training checkpoint (it holds a {type(state).__name__}, "
                              "not a dict of tensors)")
    missing = {"model", "ema", "step", "config"} - set(state)
    if missing:
        raise CheckpointError(f"{path}: not a ReTree training checkpoint (missing {sorted(missing)})")
    return state
