"""bench/colour_share.py: matching an image's FOV colour to a photograph's statistics."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from colour_share import match_colour  # noqa: E402


def test_match_colour_sets_the_fov_statistics_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    image = rng.integers(20, 120, (32, 32, 3)).astype(np.uint8)
    fov = np.zeros((32, 32), bool)
    fov[4:28, 4:28] = True
    mean, std = np.array([150.0, 60.0, 12.0]), np.array([30.0, 12.0, 4.0])
    out = match_colour(image, fov, mean, std)
    assert out.dtype == np.uint8 and np.array_equal(out[~fov], image[~fov])
    assert np.allclose(out[fov].mean(0), mean, atol=0.6) and np.allclose(out[fov].std(0), std, atol=0.6)
    assert np.corrcoef(out[fov][:, 0], image[fov][:, 0])[0, 1] > 0.99  # the picture is kept, only its colour moves
