"""The round aperture: fitted to the retina a model drew, black beyond it, the inside untouched, masks cut alike."""
from __future__ import annotations

import numpy as np

from retree_core.aperture import apply_aperture, field_of_view, fit_aperture
from retree_core.data import estimate_fov


def ragged_fundus(size_px: int = 128, centre=(66.0, 61.0), radius: float = 56.0, seed: int = 0) -> np.ndarray:
    """An orange disc whose rim is eaten by random dark notches, on black, with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size_px, :size_px]
    angle = np.arctan2(yy - centre[0], xx - centre[1])
    wobble = 3.0 * np.sin(7 * angle + 1.0) + 2.0 * np.sin(13 * angle)  # the ragged rim, +-5 px
    inside = np.hypot(yy - centre[0], xx - centre[1]) < radius + wobble
    image = np.zeros((size_px, size_px, 3), np.float32)
    image[inside] = (200, 90, 30)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_the_fitted_circle_is_the_drawn_one_and_everything_beyond_is_black() -> None:
    image = ragged_fundus()
    weights = fit_aperture(image)
    rows, cols = np.nonzero(weights >= 0.5)
    assert abs(rows.mean() - 66.0) < 1.5 and abs(cols.mean() - 61.0) < 1.5
    assert abs(np.sqrt((weights >= 0.5).sum() / np.pi) - 56.0) < 2.5
    finished, _ = apply_aperture(image)
    yy, xx = np.mgrid[:128, :128]
    distance = np.hypot(yy - 66.0, xx - 61.0)
    assert finished[distance > 60].max() == 0  # beyond the circle (and its soft edge): black
    centre = distance < 40
    assert np.array_equal(finished[centre], image[centre])  # the retina itself is left as generated
    spikes = (distance > 58) & (image[..., 0] > 150)  # the ragged rim's outward bulges
    assert spikes.any() and finished[spikes].max() < 60  # are gone


def test_masks_are_cut_to_the_same_circle_at_any_size() -> None:
    image = ragged_fundus()
    full = np.ones((512, 512), bool)
    _, cut = apply_aperture(image, full)
    yy, xx = np.mgrid[:512, :512]
    distance = np.hypot(yy - 4 * 66.0 - 1.5, xx - 4 * 61.0 - 1.5)
    assert cut.shape == (512, 512) and cut.dtype == bool
    assert not cut[distance > 4 * 58].any() and cut[distance < 4 * 50].all()
    _, same_size = apply_aperture(image, np.ones((128, 128), bool))
    assert same_size.sum() == (fit_aperture(image) >= 0.5).sum()


def test_batches_match_single_images_and_blank_images_get_the_centred_disc() -> None:
    images = np.stack([ragged_fundus(seed=0), ragged_fundus(seed=1, centre=(60.0, 70.0))])
    masks = np.ones((2, 128, 128), bool)
    batch, batch_masks = apply_aperture(images, masks)
    for i in range(2):
        one, one_mask = apply_aperture(images[i], masks[i])
        assert np.array_equal(batch[i], one) and np.array_equal(batch_masks[i], one_mask)
    assert apply_aperture(images)[1] is None
    blank = np.zeros((64, 64, 3), np.uint8)
    weights = fit_aperture(blank)
    assert weights[32, 32] == 1.0 and weights[0, 0] == 0.0 and weights[32, 0] > 0  # the inscribed disc
    assert apply_aperture(blank)[0].max() == 0


def test_the_field_of_view_is_the_lit_disc_with_its_soft_rim() -> None:
    finished, cut = apply_aperture(ragged_fundus(), np.ones((128, 128), bool))
    fov = field_of_view(finished)
    lit = finished.max(axis=-1) > 0
    assert (lit ^ fov).sum() < 0.02 * fov.sum() and not (cut & ~fov).any()  # the lit circle
    assert finished[~fov].max() < 40  # beyond it, at most the last of the soft edge
    rim = fov & ~estimate_fov(finished)
    assert rim.any() and finished[rim].max(axis=-1).mean() < 0.5 * finished[cut].max(axis=-1).mean()  # dim rim
    batch = np.stack([finished, finished[::-1]])
    assert np.array_equal(field_of_view(batch)[1], fov[::-1])
    assert not field_of_view(np.zeros((8, 8, 3), np.uint8)).any()
