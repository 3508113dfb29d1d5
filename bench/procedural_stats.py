"""Compare procedural vessel trees with real annotations, statistic by statistic.

Every mask (real or procedural) is cropped to the square around its field of view and resized to
512 px, so pixel widths and counts compare. Prints min / median / max per statistic and source, and
the generator's median time per 512 px mask.

    python bench/procedural_stats.py [DATA_DIR] [--trees 50] [--grid /tmp/procedural_grid.png]
                                     [--example assets/procedural_trees.png]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retree_core.data.procedural import TreeParams, fov_disc, procedural_tree  # noqa: E402
from retree_core.vessel_stats import STATS_SIZE_PX, to_fov_square, vessel_stats  # noqa: E402

SIZE_PX = STATS_SIZE_PX
KEYS = ("area_fraction", "skeleton_length_rel", "branch_points", "end_points", "components",
        "largest_component_fraction", "width_mean_px", "width_p90_px")


def read_binary(path: Path) -> np.ndarray:
    """Any annotation file as bool: grey conversion then a mid threshold (palette GIFs hold 0/1)."""
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
    return grey >= 128 if grey.max() > 1 else grey > 0


def real_sources(data_dir: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """DRIVE training and CHASE_DB1 first-observer annotations with their FOV masks."""
    drive, chase = [], []
    for label in sorted((data_dir / "DRIVE/training/1st_manual").glob("*_manual1.gif")):
        fov = data_dir / "DRIVE/training/mask" / label.name.replace("manual1", "training_mask")
        drive.append(to_fov_square(read_binary(label), read_binary(fov)))
    for label in sorted((data_dir / "CHASE_DB1/1st_label").glob("*_1stHO.png")):
        fov = data_dir / "CHASE_DB1/mask" / label.name.replace("_1stHO", "")
        chase.append(to_fov_square(read_binary(label), read_binary(fov)))
    return {name: pairs for name, pairs in (("DRIVE", drive), ("CHASE_DB1", chase)) if pairs}


def procedural_source(eye: str, trees: int, params: TreeParams) -> tuple[list, list[float]]:
    """`trees` procedural masks of one eye (seeds 0..trees-1), FOV-squared like the real ones."""
    pairs, seconds = [], []
    tree_params = TreeParams(**{**vars(params), "eye": eye})
    fov = fov_disc(SIZE_PX, tree_params.fov_margin)
    for seed in range(trees):
        start = time.perf_counter()
        mask = procedural_tree(SIZE_PX, tree_params, seed=seed)
        seconds.append(time.perf_counter() - start)
        pairs.append(to_fov_square(mask, fov))
    return pairs, seconds


def print_table(stats: dict[str, list[dict[str, float]]]) -> None:
    """One row per statistic, min / median / max per source."""
    names = list(stats)
    header = f"{'statistic':<27}" + "".join(f"{f'{name} (n={len(stats[name])})':>27}" for name in names)
    print(header)
    print(" " * 27 + "".join(f"{'min / median / max':>27}" for _ in names))
    for key in KEYS:
        row = f"{key:<27}"
        for name in names:
            values = np.array([s[key] for s in stats[name]], dtype=np.float64)
            digits = 0 if key in ("branch_points", "end_points", "components") else (
                3 if key in ("area_fraction", "largest_component_fraction") else 2)
            cell = " / ".join(f"{v:.{digits}f}" for v in (values.min(), np.median(values), values.max()))
            row += f"{cell:>27}"
        print(row)


def save_grid(path: Path, procedural: list[np.ndarray], real: list[np.ndarray], tile_px: int = 256) -> None:
    """Masks side by side (procedural first, then real), white on black, 4 per row."""
    tiles = [cv2.resize(m.astype(np.uint8) * 255, (tile_px, tile_px), interpolation=cv2.INTER_AREA)
             for m in procedural + real]
    columns = 4
    while len(tiles) % columns:
        tiles.append(np.zeros((tile_px, tile_px), np.uint8))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    Image.fromarray(np.vstack(rows)).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=REPO.parent / "shared/data")
    parser.add_argument("--trees", type=int, default=50, help="procedural trees per eye")
    parser.add_argument("--grid", type=Path, default=Path("/tmp/procedural_grid.png"),
                        help="procedural trees next to real annotations, for a look")
    parser.add_argument("--example", type=Path, default=None,
                        help="also save procedural trees only (seeds 0-3 per eye) here, "
                             "e.g. assets/procedural_trees.png")
    args = parser.parse_args()

    stats: dict[str, list[dict[str, float]]] = {}
    real: dict[str, list] = real_sources(args.data_dir) if args.data_dir.is_dir() else {}
    if not real:
        print(f"no real annotations under {args.data_dir}; procedural statistics only")
    for name, pairs in real.items():
        stats[name] = [vessel_stats(mask, fov) for mask, fov in pairs]

    params = TreeParams()
    seconds: list[float] = []
    examples: list[np.ndarray] = []
    for eye in ("left", "right"):
        pairs, times = procedural_source(eye, args.trees, params)
        seconds += times
        examples += [mask for mask, _ in pairs[:3]]
        stats[f"procedural-{eye}"] = [vessel_stats(mask, fov) for mask, fov in pairs]

    print_table(stats)
    print(f"\nprocedural_tree({SIZE_PX}) median time: {1000 * np.median(seconds):.1f} ms "
          f"(min {1000 * np.min(seconds):.1f}, max {1000 * np.max(seconds):.1f}; {len(seconds)} masks)")
    real_examples = [pairs[0][0] for pairs in real.values()]
    save_grid(args.grid, examples, real_examples)
    print(f"grid: {args.grid} ({len(examples)} procedural, {len(real_examples)} real)")
    if args.example:
        trees = [procedural_tree(SIZE_PX, TreeParams(**{**vars(params), "eye": eye}), seed=seed)
                 for eye in ("left", "right") for seed in range(4)]
        save_grid(args.example, trees, [], tile_px=192)
        print(f"example grid: {args.example} ({args.example.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
