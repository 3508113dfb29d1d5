"""Camera grain: the measured spectrum deficit, the noise it adds, and the profile's checks."""
import numpy as np
import pytest

from retree_core.grain import BINS, GrainProfile, add_grain, measure, radial_power


def _flat(power: float) -> GrainProfile:
    return GrainProfile(np.full((3, BINS), power), np.eye(3))


def test_measure_finds_the_noise_the_restored_copy_lacks():
    rng = np.random.default_rng(0)
    restored = np.full((4, 256, 256, 3), 120, np.uint8)
    noisy = np.clip(restored + rng.normal(0, 4, restored.shape), 0, 255).round().astype(np.uint8)
    profile = measure(noisy, restored)
    # white noise of std 4: 16 grey levels squared at every frequency, channels independent
    assert profile.power[:, 10:].mean() == pytest.approx(16, rel=0.1)
    assert np.abs(profile.correlation - np.eye(3)).max() < 0.05
    assert measure(restored, noisy).power.max() < 1.0  # the restored copy lacks nothing the noisy one has
    grey = noisy.copy()
    grey[..., 2] = 120  # a flat channel has no correlation to measure: taken as none
    assert np.allclose(measure(grey, restored).correlation[2], [0, 0, 1])
    mono = np.repeat(noisy[..., :1], 3, axis=-1)  # grey photographs saved as RGB: channels fully correlated
    assert measure(mono, restored).correlation.min() > 0.99


def test_add_grain_has_the_profile_power_above_the_cutoff_only():
    image = np.full((2, 256, 256, 3), 128, np.uint8)
    out = add_grain(image, _flat(16.0), min_frequency=0.0, seed=0)
    assert (out.astype(float) - 128).std() == pytest.approx(4.0, rel=0.05)
    high = add_grain(image, _flat(16.0), min_frequency=0.25, seed=0).astype(float) - 128
    power = radial_power(high + 128)
    assert power[:, :30].max() < 0.5 and power[:, 80:].mean() == pytest.approx(16, rel=0.15)
    assert np.array_equal(add_grain(image, _flat(16.0), 0.25, seed=0), add_grain(image, _flat(16.0), 0.25, seed=0))
    assert not np.array_equal(out[0], out[1])  # image i has its own seed


def test_correlated_channels_and_round_trip():
    corr = np.array([[1, 0.6, 0.5], [0.6, 1, 0.7], [0.5, 0.7, 1]])
    profile = GrainProfile(np.full((3, BINS), 9.0), corr)
    noise = add_grain(np.full((1, 128, 128, 3), 128, np.uint8), profile, 0.0, seed=1)[0].reshape(-1, 3) - 128.0
    assert np.abs(np.corrcoef(noise.T) - corr).max() < 0.05
    again = GrainProfile.from_dict(profile.to_dict())
    assert np.allclose(again.power, profile.power) and np.allclose(again.correlation, corr)


@pytest.mark.parametrize("power, corr", [(np.ones((3, 7)), np.eye(3)), (-np.ones((3, BINS)), np.eye(3)),
                                         (np.ones((3, BINS)), np.ones((3, 3))),
                                         (np.ones((3, BINS)), np.full((3, 3), np.nan))])
def test_bad_profiles_are_refused(power, corr):
    with pytest.raises(ValueError, match="grain profile"):
        GrainProfile(power, corr)


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory):
    """A 16 -> 64 px sr file (one training step) without grain."""
    from retree_core.config import TrainConfig
    from retree_core.train import train
    from retree_core.weights import export_weights

    out = tmp_path_factory.mktemp("sr")
    checkpoint = train(TrainConfig(mode="sr", preset="tiny", image_size=64, sr_scale=4, batch_size=2, max_steps=1,
                                   perceptual_weight=0.0, sample_interval=10, checkpoint_interval=10, progress=False,
                                   prediction="eps", output_dir=str(out / "run")))
    return export_weights(checkpoint, out / "sr")


def test_pipeline_adds_the_sr_models_grain(tiny_weights, tiny_sr, tmp_path):
    from retree_core.checkpoint import CheckpointError
    from retree_core.config import SampleConfig
    from retree_core.pipeline import FundusPipeline
    from retree_core.weights import export_weights, load_model

    with pytest.raises(ValueError, match="no camera grain measured"):
        FundusPipeline.load(str(tiny_weights), sr=str(tiny_sr), grain=True)
    with pytest.raises(ValueError, match="no sr model"):
        FundusPipeline.load(str(tiny_weights), sr="none", grain=True)
    grain = {"any": _flat(400.0).to_dict(), "reddish": _flat(0.0).to_dict()}
    with_grain = export_weights(tiny_sr, tmp_path / "sr_grain", extra_meta={"grain": grain})
    assert sorted(load_model(with_grain).grain) == ["any", "reddish"]
    mask, options = np.zeros((64, 64), bool), SampleConfig(steps=2, seed=3)
    mask[20:44, 30:34] = True
    plain, _ = FundusPipeline.load(str(tiny_weights), sr=str(with_grain), aperture=False)(mask, options)
    pipe = FundusPipeline.load(str(tiny_weights), sr=str(with_grain), aperture=False, grain=True)
    grainy, _ = pipe(mask, options)
    assert pipe.settings(options)["grain"] is True
    assert np.array_equal(grainy, pipe(mask, options)[0])  # seeded
    extra = grainy.astype(float) - plain
    assert 5 < extra.std() < 20  # 400 grey levels squared above the 16 px generator's Nyquist frequency
    assert pipe.grain_profile("reddish").power.max() == 0 and pipe.grain_profile("bluish") is pipe.grain_profile("any")
    bad = tmp_path / "bad"
    with pytest.raises(CheckpointError, match="grain"):
        export_weights(tiny_sr, bad, extra_meta={"grain": {"any": {"power": [1, 2]}}})


def test_generated_pairs_get_grain_by_default_where_the_sr_has_it(tiny_weights, tiny_sr, tmp_path, capsys):
    import json

    from retree_core.cli import main
    from retree_core.weights import export_weights

    with_grain = export_weights(tiny_sr, tmp_path / "sr_grain", extra_meta={"grain": {"any": _flat(400.0).to_dict()}})

    def grain_of(*options, sr=with_grain, rc=0):
        out = tmp_path / f"gen{len(list(tmp_path.glob('gen*')))}"
        assert main(["generate", "--weights", str(tiny_weights), "--mode", "concat", "--num", "1", "--trees",
                     "procedural", "--steps", "2", "--sr", str(sr), "--output_dir", str(out), *options]) == rc
        return rc or json.loads((out / "generation.json").read_text())["settings"]["grain"]

    assert grain_of() is True and grain_of("--no_grain") is False
    assert grain_of(sr=tiny_sr) is False  # no profile: the default quietly leaves it out
    assert grain_of("--sr", "none") is False
    grain_of("--grain", sr=tiny_sr, rc=1)  # asked for explicitly without a profile: refused, with the message
    assert "no camera grain measured" in capsys.readouterr().err
