"""Tests for retree_core.data: layouts, pairing, error reports, binarisation, augmentation, datasets.

Every dataset here is a tiny synthetic folder in tmp_path; the real data folder is never needed.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from retree_core.data import (
    AugmentConfig,
    DataError,
    MixedDataset,
    ProceduralTrees,
    PairDataset,
    Sample,
    augment,
    binarize_mask,
    check_samples,
    embedded_example,
    find_samples,
    find_samples_many,
    is_validation,
    make_dataset,
    prepare_mask,
    read_mask,
    read_rgb,
    split_samples,
)
from retree_core.data import imageio
from retree_core.data.augment import photometric
from retree_core.data.imageio import MASK_COVERAGE


def fundus(height_px: int = 40, width_px: int = 44, seed: int = 0):
    """A toy fundus photograph: bright disc on black, dark vessel lines; returns (image, mask, fov)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height_px, :width_px]
    radius = 0.45 * min(height_px, width_px)
    fov = (yy - (height_px - 1) / 2) ** 2 + (xx - (width_px - 1) / 2) ** 2 <= radius**2
    lines = np.zeros((height_px, width_px), np.uint8)
    for _ in range(3):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, [width_px, height_px] * 2))
        cv2.line(lines, (x0, y0), (x1, y1), 1, 2)
    mask = lines.astype(bool) & fov
    image = np.zeros((height_px, width_px, 3), np.uint8)
    image[fov] = (170, 90, 40)
    image[mask] = (90, 40, 20)
    return image, mask, fov


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    """Write an array (bool -> 0/255 grey) to `path`, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(path)
    return path


def palette_gif(path: Path, mask: np.ndarray) -> Path:
    """DRIVE-style annotation: palette GIF, index 0 = near-black (3,3,3), index 1 = white."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8), "P")
    im.putpalette([3, 3, 3, 255, 255, 255] + [0] * 762)
    im.save(path)
    return path


# ---------------------------------------------------------------- layouts and pairing

def test_seed_layout_pairs_img_seg_prefixes_and_equal_stems(tmp_path):
    image, mask, fov = fundus()
    save(tmp_path / "images/img_001.png", image)
    save(tmp_path / "masks/seg_001.png", mask)
    save(tmp_path / "images/b.jpg", image)
    save(tmp_path / "masks/b.png", mask)
    save(tmp_path / "fov/img_001.png", fov)
    save(tmp_path / "fov/b.png", fov)
    (tmp_path / "images/notes.txt").write_text("ignored")
    samples = find_samples(tmp_path)
    assert [(s.name, s.layout) for s in samples] == [("001", "seed"), ("b", "seed")]
    assert samples[0].mask.name == "seg_001.png" and samples[0].fov.name == "img_001.png"
    assert samples[1].image.name == "b.jpg" and samples[1].mask.name == "b.png"
    check_samples(samples)


def drive_folder(root: Path, numbers=(21, 37)) -> Path:
    for n in numbers:
        image, mask, fov = fundus(seed=n)
        save(root / f"training/images/{n}_training.tif", image)
        palette_gif(root / f"training/1st_manual/{n}_manual1.gif", mask)
        save(root / f"training/mask/{n}_training_mask.gif", fov)
    save(root / "test/images/01_test.tif", fundus()[0])  # unlabelled test split: skipped
    return root


def test_drive_layout_from_either_folder_and_palette_gif_masks(tmp_path):
    root = drive_folder(tmp_path / "DRIVE")
    for folder in (root, root / "training"):
        samples = find_samples(folder)
        assert [s.name for s in samples] == ["21_training", "37_training"]
        assert all(s.layout == "drive" and s.fov is not None for s in samples)
    gif = samples[0].mask
    assert (np.array(Image.open(gif).convert("L")) > 0).all()  # the trap: `> 0` says all vessel
    np.testing.assert_array_equal(read_mask(gif), fundus(seed=21)[1])
    check_samples(samples)


@pytest.mark.parametrize("foldered", [False, True])
def test_chase_layout_flat_and_foldered(tmp_path, foldered):
    image_dir, label_dir = (tmp_path / "images", tmp_path / "1st_label") if foldered else (tmp_path, tmp_path)
    for name in ("Image_01L", "Image_12R"):
        image, mask, fov = fundus()
        save(image_dir / f"{name}.jpg", image)
        save(label_dir / f"{name}_1stHO.png", mask, "1")  # 1-bit PNG like CHASE_DB1
        save(label_dir / f"{name}_2ndHO.png", mask)
        if foldered:
            save(tmp_path / f"mask/{name}.png", fov)
    samples = find_samples(tmp_path)
    assert [s.name for s in samples] == ["Image_01L", "Image_12R"]
    assert all(s.layout == "chase_db1" and s.mask.name.endswith("_1stHO.png") for s in samples)
    assert all((s.fov is not None) == foldered for s in samples)
    np.testing.assert_array_equal(read_mask(samples[0].mask), fundus()[1])


def test_stare_layout_with_pgm_labels(tmp_path):
    image, mask, _ = fundus()
    save(tmp_path / "im0001.ppm", image)
    save(tmp_path / "im0002.ppm", image)
    save(tmp_path / "labels-ah/im0001.ah.pgm", mask)
    save(tmp_path / "labels-ah/im0002.ah.ppm", np.repeat(mask[..., None], 3, 2).astype(np.uint8) * 255)
    samples = find_samples(tmp_path)
    assert [(s.name, s.layout, s.fov) for s in samples] == [("im0001", "stare", None),
                                                            ("im0002", "stare", None)]
    check_samples(samples)


def test_hrf_layout(tmp_path):
    image, mask, fov = fundus()
    save(tmp_path / "images/01_dr.JPG", image)
    save(tmp_path / "manual1/01_dr.tif", mask)
    save(tmp_path / "mask/01_dr_mask.tif", fov)
    [sample] = find_samples(tmp_path)
    assert (sample.name, sample.layout, sample.fov.name) == ("01_dr", "hrf", "01_dr_mask.tif")


def test_pairing_problems_are_all_reported_at_once(tmp_path):
    image, mask, _ = fundus()
    save(tmp_path / "images/a.png", image)
    save(tmp_path / "masks/a.png", mask)
    save(tmp_path / "images/lonely.png", image)
    save(tmp_path / "masks/orphan.png", mask)
    save(tmp_path / "images/twin.png", image)
    save(tmp_path / "images/twin.jpg", image)
    save(tmp_path / "masks/twin.png", mask)
    with pytest.raises(DataError) as err:
        find_samples(tmp_path)
    text = str(err.value)
    assert "lonely.png: no mask for this image" in text
    assert "orphan.png: no image for this mask" in text
    assert "twin.png: duplicate name 'twin'" in text and "twin.jpg: duplicate name 'twin'" in text
    assert "a.png" not in text


def test_unknown_layout_says_what_was_tried_and_found(tmp_path):
    save(tmp_path / "photo.png", fundus()[0])
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError) as err:
        find_samples(tmp_path)
    text = str(err.value)
    for word in ("seed", "drive", "chase_db1", "stare", "hrf", "1 .png", "1 .txt", "stuff/"):
        assert word in text


def test_check_samples_collects_every_bad_file(tmp_path):
    image, mask, fov = fundus()
    good = save(tmp_path / "good.png", image)
    png = save(tmp_path / "full.png", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])
    text_file = tmp_path / "text.png"
    text_file.write_text("not an image")
    empty = save(tmp_path / "empty.png", np.zeros_like(mask))
    small = save(tmp_path / "small.png", mask[:-2])
    samples = [
        Sample("t", truncated, save(tmp_path / "m1.png", mask), None, "seed"),
        Sample("x", good, text_file, None, "seed"),
        Sample("e", good, empty, None, "seed"),
        Sample("s", good, save(tmp_path / "m2.png", mask), small, "seed"),
    ]
    with pytest.raises(DataError) as err:
        check_samples(samples)
    lines = str(err.value).splitlines()
    assert any("truncated.png: unreadable image" in line for line in lines)
    assert any("text.png: unreadable image" in line for line in lines)
    assert any("empty.png: empty mask" in line for line in lines)
    assert any("size mismatch" in line and "fov 44x38" in line for line in lines)
    fine = Sample("ok", good, save(tmp_path / "m3.png", mask), save(tmp_path / "f.png", fov), "seed")
    check_samples([fine])


def test_many_roots_prefix_names_and_fixed_validation_split(tmp_path):
    drive = drive_folder(tmp_path / "DRIVE", numbers=(21, 36, 37, 40))
    chase = tmp_path / "CHASE_DB1"
    for name in ("Image_11L", "Image_12L", "Image_14R"):
        image, mask, _ = fundus()
        save(chase / f"{name}.jpg", image)
        save(chase / f"{name}_1stHO.png", mask)
    samples = find_samples_many([drive, chase])
    assert "DRIVE/21_training" in [s.name for s in samples]
    train, val = split_samples(samples)
    assert sorted(s.name for s in val) == ["CHASE_DB1/Image_12L", "CHASE_DB1/Image_14R",
                                           "DRIVE/37_training", "DRIVE/40_training"]
    assert sorted(s.name for s in train) == ["CHASE_DB1/Image_11L", "DRIVE/21_training", "DRIVE/36_training"]
    assert not is_validation(Sample("37_training", Path("a"), Path("b"), None, "seed"))
    _, custom = split_samples(samples, {"21_training"})
    assert [s.name for s in custom] == ["DRIVE/21_training"]


# ---------------------------------------------------------------- reading and binarising

def test_read_rgb_handles_modes(tmp_path):
    grey = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    cases = {
        "grey.png": Image.fromarray(grey),
        "rgba.png": Image.fromarray(np.dstack([grey] * 4)),
        "palette.gif": Image.fromarray(grey).convert("P"),
        "deep.png": Image.fromarray(grey.astype(np.uint16) * 257),
        "cmyk.jpg": Image.new("CMYK", (10, 12), (0, 0, 0, 0)),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        rgb = read_rgb(tmp_path / name)
        assert rgb.shape == (12, 10, 3) and rgb.dtype == np.uint8, name
    np.testing.assert_array_equal(read_rgb(tmp_path / "deep.png")[..., 0], grey)
    assert read_rgb(tmp_path / "cmyk.jpg").min() > 240  # CMYK zero ink is white


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    path = save(tmp_path / "big.png", np.zeros((30, 40), np.uint8))
    monkeypatch.setattr(imageio, "MAX_PIXELS", 1000)
    with pytest.raises(DataError, match=r"big.png: image too large \(40x30 declared"):
        read_rgb(path)


def test_binarize_mask_variants():
    mask = fundus()[1]
    grey = mask.astype(np.uint8) * 255
    drawn_alpha = np.zeros(mask.shape + (4,), np.uint8)
    drawn_alpha[..., 3] = grey  # black strokes, visible only through alpha
    cases = {
        "bool": mask,
        "0/1 uint8": mask.astype(np.uint8),
        "rgb": np.dstack([grey] * 3),
        "red on black": np.dstack([grey, 0 * grey, 0 * grey]),
        "rgba uniform colour": drawn_alpha,
        "16 bit": mask.astype(np.uint16) * 65535,
        "16 bit holding 0/255": mask.astype(np.uint16) * 255,
        "near-black background": np.where(mask, 255, 3).astype(np.uint8),
        "float": mask.astype(np.float32),
    }
    for name, arr in cases.items():
        np.testing.assert_array_equal(binarize_mask(arr), mask, err_msg=name)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0) * 0.6 + 0.2
    assert abs(int(binarize_mask(soft).sum()) - int(mask.sum())) < 0.5 * mask.sum()
    assert not binarize_mask(np.full((5, 5), 3, np.uint8)).any()


def test_read_mask_palette_and_one_bit_files(tmp_path):
    mask = fundus()[1]
    np.testing.assert_array_equal(read_mask(palette_gif(tmp_path / "m.gif", mask)), mask)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "m.png", mask, "1")), mask)


def test_prepare_mask_sizes_and_refusals(tmp_path):
    tiny = np.zeros((5, 5), bool)
    tiny[2, :] = True
    out = prepare_mask(tiny, 20)
    assert out.shape == (20, 20) and out.dtype == bool and out[10].all() and not out[0].any()
    wide = np.zeros((10, 30), np.uint8)
    wide[:, 12:18] = 255
    out = prepare_mask(Image.fromarray(wide), 15)  # padded to 30x30: content rows 5-14 of 15
    assert out.shape == (15, 15)
    assert not out[:2].any() and not out[-2:].any() and out[5:10, 7].all()
    np.testing.assert_array_equal(prepare_mask(save(tmp_path / "w.png", wide), 15), out)
    with pytest.raises(DataError, match="no vessel pixel"):
        prepare_mask(np.zeros((8, 8), np.uint8), 16)
    with pytest.raises(DataError, match="entirely foreground"):
        prepare_mask(np.full((8, 8), 255, np.uint8), 16)


# ---------------------------------------------------------------- augmentation

def test_augment_is_deterministic_per_seed():
    image, mask, fov = fundus(50, 60)
    cfg = AugmentConfig(vflip=True)
    first = augment(image, mask, fov, 32, np.random.default_rng(7), cfg)
    again = augment(image, mask, fov, 32, np.random.default_rng(7), cfg)
    other = augment(image, mask, fov, 32, np.random.default_rng(8), cfg)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert first[0].shape == (32, 32, 3) and first[0].dtype == np.uint8
    assert first[1].shape == first[2].shape == (32, 32) and first[1].dtype == bool


def test_augment_keeps_mask_aligned_with_image():
    image, mask, fov = fundus(90, 80, seed=3)
    bright = np.where(mask, 255, 0).astype(np.uint8)
    photo = np.dstack([bright] * 3)  # the mask drawn into the image itself
    cfg = AugmentConfig(vflip=True, rotate_deg=40, scale_range=(0.8, 1.3), color_jitter=0.0)
    for seed in range(4):
        out_image, out_mask, _ = augment(photo, mask, fov, 64, np.random.default_rng(seed), cfg)
        disagree = (out_image[..., 0] >= 255 * MASK_COVERAGE) != out_mask
        assert out_mask.sum() > 50 and disagree.sum() <= 0.05 * out_mask.sum() + 4


def test_color_jitter_changes_image_only():
    image, mask, fov = fundus(60, 50)
    plain = AugmentConfig(color_jitter=0.0)
    jitter = AugmentConfig(color_jitter=0.3)
    a = augment(image, mask, fov, 40, np.random.default_rng(1), plain)
    b = augment(image, mask, fov, 40, np.random.default_rng(1), jitter)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    assert np.abs(a[0].astype(int) - b[0].astype(int))[a[2]].mean() > 2
    np.testing.assert_array_equal(a[0][~a[2]], b[0][~b[2]])  # outside the FOV stays black


def test_vessel_fade_brings_the_vessels_toward_the_background_only():
    image, mask, fov = fundus(80, 80, seed=2)
    image = cv2.GaussianBlur(image, (3, 3), 0)  # a soft vessel profile, as photographs have
    far = fov & (cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0)
    contrast = lambda im: im[far].astype(float).mean() - im[mask].astype(float).mean()  # noqa: E731
    faded = [photometric(image, mask, fov, 512, np.random.default_rng(s), AugmentConfig(vessel_fade=1.0))
             for s in range(6)]
    assert all(0 < contrast(f) < contrast(image) for f in faded)
    assert min(contrast(f) for f in faded) < 0.5 * contrast(image)  # the share is drawn up to 1
    for f in faded:
        np.testing.assert_array_equal(f[far], image[far])  # away from the vessels: untouched
        np.testing.assert_array_equal(f[~fov], image[~fov])
    again = photometric(image, mask, fov, 512, np.random.default_rng(3), AugmentConfig(vessel_fade=1.0))
    np.testing.assert_array_equal(again, faded[3])


def test_blur_and_noise_change_the_image_inside_the_fov_only():
    image, mask, fov = fundus(60, 60)
    blurred = photometric(image, mask, fov, 512, np.random.default_rng(0), AugmentConfig(blur_sigma=3.0))
    noisy = photometric(image, mask, fov, 512, np.random.default_rng(0), AugmentConfig(noise_std=8.0))
    step = lambda im: np.abs(np.diff(im.astype(float), axis=1))[fov[:, 1:] & fov[:, :-1]].mean()  # noqa: E731
    assert step(blurred) < step(image) < step(noisy)
    for out in (blurred, noisy):
        np.testing.assert_array_equal(out[~fov], image[~fov])


def test_vessel_reflex_lightens_the_centre_of_wide_vessels_only():
    image = np.full((64, 64, 3), (170, 90, 40), np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[:, 20:29] = True  # 9 px wide: gets a reflex
    mask[:, 44:46] = True  # 2 px wide: too thin for one
    image[mask] = (90, 40, 20)
    fov = np.ones((64, 64), bool)
    centre_gains = []
    for seed in range(6):
        out = photometric(image, mask, fov, 512, np.random.default_rng(seed), AugmentConfig(vessel_reflex=1.0))
        gain = out.astype(int) - image.astype(int)
        assert (gain >= 0).all()  # toward the background, never darker
        assert gain[:, 24].mean() >= 3 * gain[:, [20, 28]].mean()  # the centre, more than the vessel's edges
        np.testing.assert_array_equal(out[:, 44:46], image[:, 44:46])
        np.testing.assert_array_equal(out[~mask], image[~mask])
        centre_gains.append(gain[8:56, 24, 0].min())
    assert max(centre_gains) > 30 and min(centre_gains) < max(centre_gains)  # a strength drawn per image


def test_illumination_is_a_smooth_gain_inside_the_fov():
    image, mask, fov = fundus(96, 96)
    image[fov & ~mask] = (150, 80, 40)
    changes = []
    for seed in range(4):
        out = photometric(image, mask, fov, 512, np.random.default_rng(seed), AugmentConfig(illumination=0.5))
        np.testing.assert_array_equal(out[~fov], image[~fov])
        ratio = np.where(fov & ~mask, out[..., 0] / 150.0, np.nan)
        assert np.nanmax(np.abs(np.diff(ratio, axis=1))) < 0.05  # smooth: no speckle, no edges
        changes.append(np.nanmax(ratio) - np.nanmin(ratio))
    assert max(changes) > 0.15  # uneven across the image, by a strength drawn per image


def test_photometric_extras_leave_the_geometry_and_crops_unchanged():
    image, mask, fov = fundus(64, 64)
    plain = PairDataset([(image, mask, fov)], ["a"], 48, AugmentConfig(), crop_px=24, length=5)
    extras = PairDataset([(image, mask, fov)], ["a"], 48, AugmentConfig(vessel_fade=0.8, noise_std=5, vessel_reflex=0.5,
                         illumination=0.5), crop_px=24,
                         length=5)
    assert AugmentConfig(noise_std=5).photometric_on and not AugmentConfig(noise_std=5, enabled=False).photometric_on
    for seed in range(5):
        a, b = plain[(0, seed)], extras[(0, seed)]
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["fov"], b["fov"])
        assert not torch.equal(a["image"], b["image"])


def test_no_augmentation_centres_the_fov_of_a_non_square_image():
    image, mask, fov = fundus(60, 100)
    out_image, out_mask, out_fov = augment(image, mask, fov, 48, None, None)
    rows, cols = np.nonzero(out_fov)
    assert abs(rows.mean() - 23.5) < 1 and abs(cols.mean() - 23.5) < 1
    assert out_fov.mean() > 0.7  # the FOV disc fills the square, the black margin is cropped


# ---------------------------------------------------------------- datasets

def test_pair_dataset_items(tmp_path):
    for i in range(2):
        image, mask, fov = fundus(seed=i)
        save(tmp_path / f"images/img_{i}.png", image)
        save(tmp_path / f"masks/seg_{i}.png", mask)
    ds = PairDataset.from_samples(find_samples(tmp_path), 24, AugmentConfig())
    assert len(ds) == 2
    item = ds[(1, 5)]
    assert item["name"] == "1"
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert set(item["mask"].unique().tolist()) == {-1.0, 1.0} and item["mask"].shape == (1, 24, 24)
    assert set(item["fov"].unique().tolist()) <= {0.0, 1.0} and item["fov"].sum() > 100  # estimated FOV
    assert torch.equal(ds[(1, 5)]["image"], item["image"])
    assert torch.equal(ds[1]["image"], ds[(1, 1)]["image"])
    assert not torch.equal(ds[(1, 6)]["image"], item["image"])
    with pytest.raises(IndexError):
        ds[2]


def test_crops_are_aligned_windows_of_the_full_view(tmp_path):
    image, mask, fov = fundus(64, 64)
    full = PairDataset([(image, mask, fov)], ["a"], 48, AugmentConfig(enabled=False))
    crops = PairDataset([(image, mask, fov)], ["a"], 48, AugmentConfig(enabled=False), crop_px=16, length=20)
    whole = full[(0, 0)]
    windows = set()
    for seed in range(20):
        item = crops[(0, seed)]
        assert item["image"].shape == (3, 16, 16) and item["mask"].shape == item["fov"].shape == (1, 16, 16)
        hits = [(y, x) for y in range(33) for x in range(33)
                if torch.equal(whole["image"][:, y:y + 16, x:x + 16], item["image"])
                and torch.equal(whole["mask"][:, y:y + 16, x:x + 16], item["mask"])]
        assert hits  # the same window of image and mask
        windows.add(hits[0])
    assert len(windows) > 5  # and the window moves with the seed
    with pytest.raises(ValueError, match="crop_px 60"):
        PairDataset([(image, mask, fov)], ["a"], 48, crop_px=60)


def test_mixed_dataset_draws_the_requested_share_of_synthetic_items():
    real = PairDataset([fundus(seed=0)], ["real"], 16, AugmentConfig(enabled=False), length=10)
    synthetic = PairDataset([fundus(seed=1)], ["synthetic"], 16, AugmentConfig(enabled=False), length=30)
    for fraction, low, high in ((0.0, 0, 0), (0.25, 0.15, 0.35), (1.0, 1, 1)):
        mixed = MixedDataset(real, synthetic, fraction)
        assert len(mixed) == 40
        names = [mixed[(i % 40, i)]["name"] for i in range(400)]
        share = np.mean([n == "synthetic" for n in names])
        assert low <= share <= high
    assert torch.equal(mixed[(5, 7)]["image"], mixed[(5, 7)]["image"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        MixedDataset(real, synthetic, 1.5)


def test_procedural_trees_are_seeded_varied_trees_inside_the_fov():
    from retree_core.plausibility import plausibility

    trees = ProceduralTrees(64, length=20)
    item = trees[(3, 11)]
    assert len(trees) == 20 and item["image"].shape == (3, 64, 64) and item["name"] == "procedural/3"
    assert torch.equal(item["mask"], trees[(3, 11)]["mask"])  # a pure function of (index, seed)
    assert not torch.equal(item["mask"], trees[(3, 12)]["mask"]) and not torch.equal(item["mask"], trees[(4, 11)]["mask"])
    assert set(item["mask"].unique().tolist()) == {-1.0, 1.0} and (item["image"] == -1).all()
    assert ((item["mask"] > 0) <= (item["fov"] > 0.5)).all()  # vessels only inside the field of view
    eyes = {trees.params(np.random.default_rng(seed)).eye for seed in range(20)}
    assert eyes == {"left", "right"}
    scores = [plausibility(ProceduralTrees(128)[(i, 0)]["mask"][0].numpy() > 0).value for i in range(6)]
    assert sum(score > 0.5 for score in scores) >= 4, scores
    with pytest.raises(IndexError):
        trees[(20, 0)]


def test_make_dataset_splits_and_reports_bad_data(tmp_path):
    root = drive_folder(tmp_path / "DRIVE", numbers=(21, 22, 38))
    assert len(make_dataset([str(root)], 16, split="train")) == 2
    val = make_dataset([str(root)], 16, split="val")
    assert val.names == ["DRIVE/38_training"] and not val.augment_cfg.enabled
    save(root / "training/1st_manual/22_manual1.gif", np.zeros((40, 44), bool))
    with pytest.raises(DataError, match="22_manual1.gif: empty mask"):
        make_dataset([str(root)], 16)


def test_embedded_example_and_dataset():
    image, vessels, fov = embedded_example()
    assert image.shape == (512, 512, 3) and vessels.shape == fov.shape == (512, 512)
    assert 0.6 < fov.mean() < 0.85
    assert 0.08 <= vessels[fov].mean() <= 0.14
    assert image[vessels, 1].mean() < image[fov & ~vessels, 1].mean() - 10  # vessels are dark
    ds = make_dataset(None, 32)
    assert len(ds) == 64 and ds[(3, 9)]["image"].shape == (3, 32, 32)
