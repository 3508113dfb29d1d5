"""Where an app's training data comes from: the embedded example, an uploaded dataset zip, or folders
on the machine (refused when hosted). Everything is found and checked before a run starts."""
from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retree_core.data import DataError, embedded_example, find_samples

from .archives import ZipLimits, dataset_root, unpack_zip

DATA_SOURCES = ("embedded", "zip", "folder")
EMBEDDED_NOTE = "embedded example (scikit-image retina photograph, CC0, with a ridge-filter mask)"


@dataclass
class TrainingData:
    roots: list[str] | None  # None: the embedded example
    note: str  # what it is, for people and for run.json
    unpacked: Path | None = None  # the folder a zip was unpacked into: the caller removes it when done

    def remove(self) -> None:
        """Delete what was unpacked for this dataset (after an evaluation, or a run that did not start)."""
        if self.unpacked is not None:
            shutil.rmtree(self.unpacked, ignore_errors=True)


def training_data(source: str, zip_path: str | None, folders: str | None, unpack_dir: Path,
                  limits: ZipLimits = ZipLimits(), hosted: bool = False) -> TrainingData:
    """Resolve a dataset choice; a zip is unpacked (safely) into a new folder under `unpack_dir`.
    Raises DataError / ValueError with what is wrong."""
    if source == "embedded":
        return TrainingData(None, EMBEDDED_NOTE)
    if source == "zip":
        if not zip_path:
            raise ValueError("upload a dataset zip first (images/ + masks/, or a DRIVE, CHASE_DB1, STARE or HRF "
                             "folder)")
        dest = unpack_dir / f"{time.strftime('%Y%m%d-%H%M%S')}_{time.monotonic_ns() % 10**6:06d}"
        name = Path(zip_path).name
        unpacked = unpack_zip(zip_path, dest, limits)
        try:
            root = dataset_root(unpacked)
            count = len(find_samples(root))
        except DataError as exc:  # no dataset in it: nothing is kept, and the message speaks of the zip
            inner = any(p.suffix.lower() == ".zip" for p in dest.rglob("*"))
            shutil.rmtree(dest, ignore_errors=True)
            nested = "\n(zips inside the zip are not unpacked: zip the dataset folder itself)" if inner else ""
            raise DataError(str(exc).replace(str(dest), name) + nested) from None
        return TrainingData([str(root)], f"uploaded zip {name} ({count} pairs)", dest)
    if source == "folder":
        if hosted:
            raise ValueError("folder paths on the server are not accepted here; upload a zip instead")
        paths = [Path(p.strip()).expanduser() for p in re.split(r"[;\n]", folders or "") if p.strip()]
        if not paths:
            raise ValueError("enter the path of a dataset folder on this machine")
        count = sum(len(find_samples(p)) for p in paths)
        return TrainingData([str(p) for p in paths], f"folder(s) {'; '.join(map(str, paths))} ({count} pairs)")
    raise DataError(f"unknown dataset source {source!r}; expected one of {', '.join(DATA_SOURCES)}")


def embedded_folder(root: Path) -> Path:
    """The embedded example as a one-pair dataset folder in the seed layout (written once), for the
    commands that read folders (evaluation)."""
    if not (root / "images" / "img_0.png").exists():
        for folder, name, arr in zip(("images", "masks", "fov"), ("img_0", "seg_0", "fov_0"), embedded_example()):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr if arr.dtype == np.uint8 else arr.astype(np.uint8) * 255).save(root / folder / f"{name}.png")
    return root


__all__ = ["DATA_SOURCES", "TrainingData", "embedded_folder", "training_data"]
