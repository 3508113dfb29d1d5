"""Procedural vessel trees: determinism, anatomy, parameter checks; vessel_stats on hand-made masks."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from retree_core.data.procedural import TreeParams, fov_disc, grow_tree, procedural_tree
from retree_core.vessel_stats import vessel_stats


def pixel_grid(size_px: int, params: TreeParams) -> tuple[float, float]:
    """Centre and FOV radius in pixels, to map FOV units onto an image."""
    return (size_px - 1) / 2, size_px * (0.5 - params.fov_margin)


@pytest.mark.parametrize("size_px", [64, 256, 512, 700])
def test_dtype_and_shape(size_px: int) -> None:
    mask, width = procedural_tree(size_px, seed=1, return_width=True)
    assert mask.shape == width.shape == (size_px, size_px)
    assert mask.dtype == bool and width.dtype == np.float32
    assert mask.any()
    assert np.all(width[~mask] == 0) and np.all(width[mask] > 0)
    assert np.array_equal(procedural_tree(size_px, seed=1), mask)


def test_deterministic_for_a_seed() -> None:
    assert np.array_equal(procedural_tree(256, seed=7), procedural_tree(256, seed=7))
    assert not np.array_equal(procedural_tree(256, seed=7), procedural_tree(256, seed=8))


@pytest.mark.parametrize("eye", ["left", "right"])
def test_tree_is_connected_and_inside_fov(eye: str) -> None:
    params = TreeParams(eye=eye)
    fov = fov_disc(512, params.fov_margin)
    for seed in range(3):
        mask = procedural_tree(512, params, seed=seed)
        assert not (mask & ~fov).any()
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        largest_px = np.bincount(labels.ravel())[1:].max()
        assert largest_px >= 0.9 * mask.sum()


def test_main_vessels_wider_than_second_generation() -> None:
    params = TreeParams()
    mask, width = procedural_tree(512, params, seed=2, return_width=True)
    centre, radius = pixel_grid(512, params)
    segments = grow_tree(params, seed=2)

    def mean_width_px(generation: int) -> float:
        points = np.concatenate([s.points for s in segments if s.generation == generation])
        cols, rows = np.clip(np.round(centre + points * radius).astype(int), 0, 511).T
        values = width[rows, cols]
        return float(values[values > 0].mean())

    assert mean_width_px(0) > 1.5 * mean_width_px(2)


@pytest.mark.parametrize("eye", ["left", "right"])
def test_vessels_converge_on_the_disc_side_of_the_eye(eye: str) -> None:
    """Densest vessel area (the disc) lies left of centre for a left eye, right for a right eye."""
    for seed in range(3):
        mask = procedural_tree(256, TreeParams(eye=eye), seed=seed)
        density = ndimage.gaussian_filter(mask.astype(np.float32), 6)
        _, col = np.unravel_index(density.argmax(), density.shape)
        assert (col < 128) == (eye == "left")


def test_macula_centre_is_vessel_free() -> None:
    params = TreeParams(eye="right")
    macula_x, macula_y = params.macula_unit()
    centre, radius = pixel_grid(256, params)
    rows, cols = np.mgrid[:256, :256]
    near_fovea = np.hypot((cols - centre) / radius - macula_x, (rows - centre) / radius - macula_y) < 0.1
    for seed in range(3):
        assert not procedural_tree(256, params, seed=seed)[near_fovea].any()


def test_depth_zero_draws_trunks_only() -> None:
    assert {s.generation for s in grow_tree(TreeParams(depth=0, macular_vessels=0))} == {0}
    assert procedural_tree(128, TreeParams(depth=0)).sum() < procedural_tree(128).sum()


@pytest.mark.parametrize("changes, message", [
    ({"depth": -1}, "depth"),
    ({"depth": 9}, "depth"),
    ({"width_px": -2.0}, "width_px"),
    ({"main_vessels": 0}, "main_vessels"),
    ({"tortuosity": -0.1}, "tortuosity"),
    ({"eye": "up"}, "eye"),
    ({"fov_margin": 0.4}, "fov_margin"),
    ({"disc_xy": (0.0, 0.0)}, "disc_xy"),
])
def test_invalid_params_raise(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TreeParams(**changes)


def test_invalid_size_raises() -> None:
    with pytest.raises(ValueError, match="size_px"):
        procedural_tree(4)


def test_fov_disc() -> None:
    fov = fov_disc(100, 0.05)
    assert fov[50, 50] and not fov[0, 0] and not fov[50, 2] and fov[50, 8]
    assert abs(fov.mean() - np.pi * 0.45**2) < 0.01


def test_stats_of_a_straight_line() -> None:
    mask = np.zeros((64, 64), bool)
    mask[30:33, 10:50] = True
    stats = vessel_stats(mask)
    assert stats["branch_points"] == 0 and stats["end_points"] == 2
    assert stats["components"] == 1 and stats["largest_component_fraction"] == 1.0
    assert stats["width_p50_px"] == pytest.approx(3.0)
    assert stats["area_fraction"] == pytest.approx(120 / 64**2)


def test_stats_of_a_t() -> None:
    mask = np.zeros((64, 64), bool)
    mask[10:13, 10:54] = True  # bar
    mask[12:54, 31:34] = True  # stem
    stats = vessel_stats(mask)
    assert stats["branch_points"] == 1 and stats["end_points"] == 3


def test_stats_respect_fov_and_empty_masks() -> None:
    mask = np.zeros((64, 64), bool)
    mask[30:33, 0:64] = True
    half = np.zeros_like(mask)
    half[:, :32] = True
    assert vessel_stats(mask, half)["area_fraction"] == pytest.approx(96 / half.sum())
    empty = vessel_stats(np.zeros((32, 32), bool))
    assert empty["components"] == 0 and empty["skeleton_length_rel"] == 0.0


def test_procedural_stats_are_in_the_range_of_real_annotations() -> None:
    """Loose bounds around DRIVE / CHASE_DB1 (see bench/procedural_stats.py for the measured table)."""
    stats = vessel_stats(procedural_tree(512, seed=0), fov_disc(512, TreeParams().fov_margin))
    assert 0.07 < stats["area_fraction"] < 0.17
    assert 8 < stats["skeleton_length_rel"] < 20
    assert 40 < stats["branch_points"] < 250
