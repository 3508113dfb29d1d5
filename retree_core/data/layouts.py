"""Finding (image, vessel mask, FOV) triples in the folder layouts that public datasets ship in.

Layouts are recognised by their folder and file names, tried in a fixed order: seed, DRIVE, CHASE_DB1,
STARE, HRF. Pairing problems and unreadable files are collected and reported together, one line each,
so that a user can fix a dataset in one pass instead of one crash at a time.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np

from .imageio import IMAGE_SUFFIXES, DataError, read_mask, read_rgb

T = TypeVar("T")
Triple = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]

LAYOUT_HELP = {
    "seed": "images/ + masks/ (img_X <-> seg_X or equal names), optional fov/",
    "drive": "images/NN_training.tif + 1st_manual/NN_manual1.gif + mask/, maybe under training/ or test/",
    "chase_db1": "Image_NNX.jpg + Image_NNX_1stHO.png, flat or in images/ + 1st_label/ (+ mask/)",
    "stare": "imNNNN.ppm + labels-ah/ or labels-vk/ (imNNNN.ah.ppm or .pgm)",
    "hrf": "images/*.jpg + manual1/*.tif + mask/*_mask.tif",
}

# The fixed validation split, never trained on: DRIVE training images 37-40 and CHASE_DB1 subjects 12-14.
DEFAULT_VAL: dict[str, frozenset[str]] = {
    "drive": frozenset(f"{number}_training" for number in range(37, 41)),
    "chase_db1": frozenset(f"Image_{subject}{eye}" for subject in (12, 13, 14) for eye in "LR"),
}


@dataclass(frozen=True)
class Sample:
    """One annotated photograph: where its files are and which layout it came from."""

    name: str
    image: Path
    mask: Path
    fov: Path | None
    layout: str


def _images_in(folder: Path) -> list[Path]:
    """Image files directly in `folder` (hidden files skipped), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _by_key(files: Iterable[Path], key: Callable[[Path], str], problems: list[str]) -> dict[str, Path]:
    """Files indexed by pairing key; every file of a key that occurs twice is reported."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(key(path), []).append(path)
    for name, paths in groups.items():
        if len(paths) > 1:
            problems.extend(f"{p}: duplicate name {name!r}" for p in paths)
    return {name: paths[0] for name, paths in groups.items() if len(paths) == 1}


def _pair(layout: str, problems: list[str], images: list[Path], image_key: Callable[[Path], str],
          masks: list[Path], mask_key: Callable[[Path], str], fovs: list[Path] | None = None,
          fov_key: Callable[[Path], str] | None = None) -> list[Sample]:
    """Samples from files matched by key; every unmatched or duplicated file is added to `problems`.

    `fovs=None` means the layout has no FOV folder; a list means every image needs one.
    """
    by_image = _by_key(images, image_key, problems)
    by_mask = _by_key(masks, mask_key, problems)
    by_fov = _by_key(fovs, fov_key or image_key, problems) if fovs is not None else {}
    problems.extend(f"{path}: no mask for this image" for k, path in by_image.items() if k not in by_mask)
    problems.extend(f"{path}: no image for this mask" for k, path in by_mask.items() if k not in by_image)
    if fovs is not None:
        problems.extend(f"{path}: no FOV mask for this image" for k, path in by_image.items()
                        if k not in by_fov)
        problems.extend(f"{path}: no image for this FOV mask" for k, path in by_fov.items()
                        if k not in by_image)
    return [Sample(name, path, by_mask[name], by_fov.get(name), layout)
            for name, path in by_image.items() if name in by_mask and (fovs is None or name in by_fov)]


def _strip(prefixes: tuple[str, ...], suffix_pattern: str = "") -> Callable[[Path], str]:
    """Key function: the file stem without one of `prefixes` and without a trailing regex match."""
    def key(path: Path) -> str:
        stem = re.sub(suffix_pattern + "$", "", path.stem, flags=re.IGNORECASE)
        for prefix in prefixes:
            if stem.startswith(prefix) and len(stem) > len(prefix):
                return stem[len(prefix):]
        return stem
    return key


def _seed(root: Path, problems: list[str]) -> list[Sample] | None:
    """root/images + root/masks (+ root/fov): img_X <-> seg_X, otherwise equal stems."""
    if not ((root / "images").is_dir() and (root / "masks").is_dir()):
        return None
    key = _strip(("img_", "seg_", "fov_"))
    fovs = _images_in(root / "fov") if (root / "fov").is_dir() else None
    return _pair("seed", problems, _images_in(root / "images"), key, _images_in(root / "masks"), key,
                 fovs, key)


def _drive(root: Path, problems: list[str]) -> list[Sample] | None:
    """DRIVE: the DRIVE folder or one of its training/ test/ folders; unlabelled splits are skipped."""
    splits = [root] if (root / "images").is_dir() else [root / "training", root / "test"]
    splits = [s for s in splits if (s / "images").is_dir() and (s / "1st_manual").is_dir()]
    if not splits:
        return None
    number = re.compile(r"^(\d+)_(training|test|manual1)(_mask)?$")

    def key(path: Path) -> str:
        match = number.match(path.stem)
        return str(int(match.group(1))) if match else path.stem

    samples = []
    for split in splits:
        fovs = _images_in(split / "mask") if (split / "mask").is_dir() else None
        pairs = _pair("drive", problems, _images_in(split / "images"), key,
                      _images_in(split / "1st_manual"), key, fovs, key)
        samples += [Sample(s.image.stem, s.image, s.mask, s.fov, s.layout) for s in pairs]
    return samples


CHASE_IMAGE = re.compile(r"^Image_\d+[LR]$", re.IGNORECASE)
CHASE_LABEL = re.compile(r"^(Image_\d+[LR])_1stHO$", re.IGNORECASE)


def _chase(root: Path, problems: list[str]) -> list[Sample] | None:
    """CHASE_DB1: Image_NNX.jpg with Image_NNX_1stHO.png, flat or images/ + 1st_label/ (+ mask/)."""
    foldered = (root / "images").is_dir() and (root / "1st_label").is_dir()
    image_dir, label_dir = (root / "images", root / "1st_label") if foldered else (root, root)
    images = [p for p in _images_in(image_dir) if CHASE_IMAGE.match(p.stem) and p.suffix.lower() != ".png"]
    if not images:
        return None
    labels = [p for p in _images_in(label_dir) if CHASE_LABEL.match(p.stem)]
    fovs = _images_in(root / "mask") if foldered and (root / "mask").is_dir() else None
    return _pair("chase_db1", problems, images, _strip(()), labels, _strip((), "_1stHO"), fovs)


def _stare(root: Path, problems: list[str]) -> list[Sample] | None:
    """STARE: imNNNN.ppm (flat, images/ or stare-images/) with labels-ah/ (preferred) or labels-vk/."""
    label_dir = next((root / d for d in ("labels-ah", "labels-vk") if (root / d).is_dir()), None)
    image_dir = next((root / d for d in ("stare-images", "images") if (root / d).is_dir()), root)
    images = [p for p in _images_in(image_dir) if p.suffix.lower() == ".ppm"]
    if label_dir is None or not images:
        return None
    stem_before_dot = lambda path: path.name.split(".")[0]  # im0001.ah.ppm -> im0001
    return _pair("stare", problems, images, stem_before_dot, _images_in(label_dir), stem_before_dot)


def _hrf(root: Path, problems: list[str]) -> list[Sample] | None:
    """HRF: images/NN_x.jpg, manual1/NN_x.tif, mask/NN_x_mask.tif."""
    if not ((root / "images").is_dir() and (root / "manual1").is_dir()):
        return None
    fovs = _images_in(root / "mask") if (root / "mask").is_dir() else None
    return _pair("hrf", problems, _images_in(root / "images"), _strip(()), _images_in(root / "manual1"),
                 _strip(()), fovs, _strip((), "_mask"))


DETECTORS = {"seed": _seed, "drive": _drive, "chase_db1": _chase, "stare": _stare, "hrf": _hrf}


def _detect(root: Path) -> tuple[str, list[Sample], list[str]] | None:
    """(layout, samples, problems) for the first layout whose signature `root` shows, else None."""
    for layout, detect in DETECTORS.items():
        problems: list[str] = []
        samples = detect(root, problems)
        if samples is not None:
            return layout, samples, problems
    return None


def _describe(root: Path) -> str:
    """What a folder holds: file counts by extension, its subfolders, and which of them are datasets."""
    entries = [p for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    counts = Counter(p.suffix.lower() or "(no extension)" for p in entries if p.is_file())
    files = ", ".join(f"{n} {ext}" for ext, n in sorted(counts.items())) or "no files"
    folders = [p for p in entries if p.is_dir()]
    listing = ", ".join(f"{p.name}/ ({sum(c.is_file() for c in p.iterdir())} files, "
                        f"{sum(c.is_dir() for c in p.iterdir())} folders)" for p in folders)
    hints = [f"{p} ({found[0]})" for p in folders if (found := _detect(p)) is not None]
    hint = f". Subfolders in a known layout: {', '.join(hints)}" if hints else ""
    return f"found {files}; {listing or 'no subfolders'}{hint}"


def find_samples(root: str | Path) -> list[Sample]:
    """Samples of a dataset folder in any known layout, sorted by name; all problems in one DataError."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    found = _detect(root)
    if found is None:
        tried = "\n".join(f"  {layout}: {help_text}" for layout, help_text in LAYOUT_HELP.items())
        raise DataError(f"{root}: no known dataset layout; {_describe(root)}. Tried:\n{tried}")
    layout, samples, problems = found
    if problems:
        raise DataError(f"{root}: {len(problems)} problem(s) in {layout} layout:\n" + "\n".join(problems))
    if not samples:
        raise DataError(f"{root}: {layout} layout but no image/mask pair in it")
    return sorted(samples, key=lambda s: s.name)


def find_samples_many(roots: Iterable[str | Path]) -> list[Sample]:
    """Samples of several datasets, names prefixed by their root folder name ("CHASE_DB1/Image_01L")."""
    samples, errors = [], []
    for root in roots:
        try:
            found = find_samples(root)
        except DataError as exc:
            errors.append(str(exc))
            continue
        prefix = Path(root).resolve().name
        samples += [Sample(f"{prefix}/{s.name}", s.image, s.mask, s.fov, s.layout) for s in found]
    counts = Counter(s.name for s in samples)
    errors += [f"{s.image}: duplicate name {s.name!r} (two data roots with the same folder name?)"
               for s in samples if counts[s.name] > 1]
    if errors:
        raise DataError("\n".join(errors))
    return sorted(samples, key=lambda s: s.name)


def style_of(name: str) -> str:
    """A sample's dataset style: its data root's folder name, the prefix `find_samples_many` gives its name."""
    return name.split("/", 1)[0]


def base_name(sample: Sample) -> str:
    """The sample's name inside its dataset (without a data-root prefix)."""
    return sample.name.rsplit("/", 1)[-1]


def is_validation(sample: Sample) -> bool:
    """Whether a sample belongs to the fixed validation split (`DEFAULT_VAL`)."""
    return base_name(sample) in DEFAULT_VAL.get(sample.layout, frozenset())


def is_benchmark_test(sample: Sample) -> bool:
    """DRIVE test-set images: measured independently, so never trained on."""
    return sample.layout == "drive" and base_name(sample).endswith("_test")


def split_samples(samples: list[Sample], val_names: set[str] | None = None
                  ) -> tuple[list[Sample], list[Sample]]:
    """(train, val). Validation is `val_names` (full or base names) or else the fixed `DEFAULT_VAL`;
    DRIVE test images go to neither."""
    def in_val(s: Sample) -> bool:
        return is_validation(s) if val_names is None else bool({s.name, base_name(s)} & set(val_names))
    train = [s for s in samples if not in_val(s) and not is_benchmark_test(s)]
    val = [s for s in samples if in_val(s)]
    return train, val


def _size(arr: np.ndarray) -> str:
    return f"{arr.shape[1]}x{arr.shape[0]}"


def load_sample(sample: Sample) -> Triple:
    """(image uint8 HxWx3, mask bool, fov bool or None); every problem of the sample in one DataError."""
    problems, arrays = [], {}
    for role, path, reader in (("image", sample.image, read_rgb), ("mask", sample.mask, read_mask),
                               ("fov", sample.fov, read_mask)):
        if path is None:
            continue
        try:
            arrays[role] = reader(path)
        except DataError as exc:
            problems.append(str(exc))
    if "mask" in arrays and not arrays["mask"].any():
        problems.append(f"{sample.mask}: empty mask (no vessel pixel)")
    elif "mask" in arrays and arrays["mask"].all():
        problems.append(f"{sample.mask}: the mask is all vessel (inverted, or a FOV mask?): vessels are white "
                        "on a black background")
    if "fov" in arrays and not arrays["fov"].any():
        problems.append(f"{sample.fov}: empty FOV mask")
    sizes = {role: _size(arr) for role, arr in arrays.items()}
    if len(set(sizes.values())) > 1:
        problems.append(f"{sample.image}: size mismatch: " +
                        ", ".join(f"{role} {size}" for role, size in sizes.items()))
    if problems:
        raise DataError("\n".join(problems))
    return arrays["image"], arrays["mask"], arrays.get("fov")


def load_samples(samples: list[Sample], transform: Callable[[Triple], T]) -> list[T]:
    """`transform(triple)` of every sample, reading each file once; all problems in one DataError."""
    results, problems = [], []
    for sample in samples:
        try:
            results.append(transform(load_sample(sample)))
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        count = sum(p.count("\n") + 1 for p in problems)
        raise DataError(f"{count} problem(s) in {len(samples)} samples:\n" + "\n".join(problems))
    return results


def check_samples(samples: list[Sample]) -> None:
    """Open every file once and raise one DataError listing every unreadable, empty or mismatched file."""
    load_samples(samples, lambda triple: None)
