"""Thin vessels grown onto a tree (twigs.py): added where there is room, thin, attached, seeded."""
import numpy as np
import pytest
from scipy import ndimage

from retree_core.data.procedural import TreeParams, fov_disc, procedural_tree
from retree_core.twigs import add_twigs
from retree_core.vessel_stats import vessel_stats

EIGHT = np.ones((3, 3), bool)


@pytest.fixture(scope="module")
def sparse_tree():
    """Trunks and one generation of branches: the kind of tree the stage-1 model draws."""
    return procedural_tree(256, TreeParams(depth=1, width_px=10.0), seed=3)


def test_twigs_add_thin_centre_line_and_keep_the_tree(sparse_tree):
    out = add_twigs(sparse_tree, seed=0)
    before, after = vessel_stats(sparse_tree), vessel_stats(out)
    assert (out >= sparse_tree).all()  # the tree itself is untouched
    assert after["skeleton_length_rel"] > 1.25 * before["skeleton_length_rel"]
    new = out & ~sparse_tree
    width = 2 * ndimage.distance_transform_edt(new) - 1
    assert np.percentile(width[new], 99) <= 3  # thin: about 2 px at 256
    assert not (new & ~fov_disc(256)).any()  # inside the field of view


def test_twigs_are_attached_to_the_tree(sparse_tree):
    out = add_twigs(sparse_tree, seed=1)
    assert ndimage.label(out, EIGHT)[1] <= ndimage.label(sparse_tree, EIGHT)[1]


def test_twigs_are_seeded_and_fill_free_space_only(sparse_tree):
    a, b = add_twigs(sparse_tree, seed=5), add_twigs(sparse_tree, seed=5)
    assert np.array_equal(a, b) and not np.array_equal(a, add_twigs(sparse_tree, seed=6))
    full = procedural_tree(256, TreeParams(depth=7), seed=3)  # little room left: fewer twigs
    gained = lambda t: (add_twigs(t, 0).sum() - t.sum()) / t.sum()  # noqa: E731
    assert gained(full) < gained(sparse_tree)


def test_closer_spacing_grows_more_thin_vessels(sparse_tree):
    length = lambda spacing: vessel_stats(add_twigs(sparse_tree, 2, spacing))["skeleton_length_rel"]  # noqa: E731
    assert length(14) > length(28) > length(56)


def test_twigs_on_empty_or_bad_trees():
    empty = np.zeros((64, 64), bool)
    assert not add_twigs(empty).any()
    with pytest.raises(ValueError, match="square"):
        add_twigs(np.zeros((64, 32), bool))
    with pytest.raises(ValueError, match="spacing"):
        add_twigs(np.zeros((64, 64), bool), spacing_px=0)
