"""Writing generated (image, mask) pairs in the layout a segmentation framework reads.

- `seed`: `images/img_NAME.png` + `masks/seg_NAME.png` (white vessels) + `fov/fov_NAME.png` (the field of
  view, when the images have the round aperture), which this project, the app and most loaders read;
- `nnunet`: an nnU-Net v2 raw dataset, `DatasetNNN_Name/imagesTr/retree_NAME_0000.png` (one RGB PNG,
  channels R, G, B) + `labelsTr/retree_NAME.png` (0 background, 1 vessel) + `dataset.json`.

Every image carries the settings that made it (its PNG text chunk, images.read_settings), and the folder
a `generation.json` with the shared settings and each image's seed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .config import ConfigError
from .images import mask_rgb, save_png

LAYOUTS = ("seed", "nnunet")
NNUNET_ID, NNUNET_NAME = 501, "ReTreeSynthetic"  # nnU-Net asks custom datasets to use ids from 500 on
SETTINGS_NAME = "generation.json"


class PairWriter:
    """`write` one pair at a time; `close` writes the folder's index (and nnU-Net's dataset.json)."""

    def __init__(self, out_dir: str | Path, settings: dict, layout: str = "seed", dataset_id: int = NNUNET_ID,
                 dataset_name: str = NNUNET_NAME):
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout == "nnunet" and not (1 <= dataset_id <= 999 and re.fullmatch(r"[A-Za-z0-9_-]+", dataset_name)):
            raise ConfigError(f"an nnU-Net dataset needs an id from 1 to 999 and a name of letters, digits, '_' "
                             f"or '-', got {dataset_id} and {dataset_name!r}")
        self.layout, self.settings = layout, settings
        self.root = Path(out_dir) / f"Dataset{dataset_id:03d}_{dataset_name}" if layout == "nnunet" else Path(out_dir)
        self.seeds: dict[str, int] = {}

    def paths(self, name: str) -> tuple[Path, Path]:
        if self.layout == "nnunet":
            return self.root / "imagesTr" / f"retree_{name}_0000.png", self.root / "labelsTr" / f"retree_{name}.png"
        return self.root / "images" / f"img_{name}.png", self.root / "masks" / f"seg_{name}.png"

    def write(self, name: str, image: np.ndarray, mask: np.ndarray, seed: int, fov: np.ndarray | None = None) -> None:
        """One pair; `fov` (bool) is written beside it in the seed layout (nnU-Net has no FOV)."""
        image_path, mask_path = self.paths(name)
        save_png(image_path, image, {**self.settings, "seed": seed})
        labels = np.asarray(mask, bool).astype(np.uint8) if self.layout == "nnunet" else mask_rgb(mask)
        save_png(mask_path, labels)
        if fov is not None and self.layout == "seed":
            save_png(self.root / "fov" / f"fov_{name}.png", np.asarray(fov, bool).astype(np.uint8) * 255)
        self.seeds[image_path.relative_to(self.root).as_posix()] = seed

    def close(self) -> Path:
        """Write the index files; returns the dataset's folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        shared = {k: v for k, v in self.settings.items() if k != "seed"}
        (self.root / SETTINGS_NAME).write_text(json.dumps({"settings": shared, "seeds": self.seeds}, indent=2))
        if self.layout == "nnunet":
            dataset = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "vessel": 1},
                       "numTraining": len(self.seeds), "file_ending": ".png",
                       "name": self.root.name, "description": "synthetic fundus photographs and their vessel "
                       f"trees from ReTree Studio {shared.get('retree', '')}".strip()}
            (self.root / "dataset.json").write_text(json.dumps(dataset, indent=2))
        return self.root


__all__ = ["LAYOUTS", "NNUNET_ID", "NNUNET_NAME", "PairWriter", "SETTINGS_NAME"]
