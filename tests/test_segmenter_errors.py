"""bench/segmenter_errors.py: a segmenter's false positives sorted into width, rim and elsewhere."""
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from retree_core.data import embedded_example
from retree_core.data.layouts import find_samples
from retree_core.images import save_png

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import segmenter_errors as bench  # noqa: E402


class Fixed:
    """A stand-in segmenter that answers with a given probability map."""

    def __init__(self, prob):
        self.prob, self.threshold, self.name = prob, 0.5, "fixed"

    def __call__(self, image, fov):
        return self.prob


def test_false_positives_are_split_into_width_rim_and_elsewhere(tmp_path):
    image, truth, fov = embedded_example()
    for folder, name, arr in (("images", "img_0", image), ("masks", "seg_0", truth.astype(np.uint8) * 255),
                              ("fov", "fov_0", fov.astype(np.uint8) * 255)):
        save_png(tmp_path / folder / f"{name}.png", arr)
    samples = find_samples(tmp_path)
    perfect = bench.errors(Fixed(truth.astype(np.float32)), samples)
    assert perfect["f1"] > 0.999 and perfect["best_f1"] > 0.999
    wide = ndimage.binary_dilation(truth, iterations=1) & fov
    rim = fov & (ndimage.distance_transform_edt(fov) < 5) & ~ndimage.binary_dilation(truth, iterations=4)
    e = bench.errors(Fixed((wide | rim).astype(np.float32)), samples)
    assert e["f1"] < 0.9 and abs(e["beside"] - (wide & ~truth).sum() / ((wide | rim) & ~truth).sum()) < 1e-6
    assert e["rim"] > 0.1 and e["other"] == 0 and abs(e["beside"] + e["rim"] - 1) < 1e-9
