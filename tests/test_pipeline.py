"""Generation on a tiny trained model: solvers agree, streaming frames, stopping, option checks."""
import numpy as np
import pytest
import torch

from retree_core.pipeline import generate, stream, vessel_masks

MASK = np.zeros((16, 16), bool)
MASK[7:9, :] = True
MASK[:, 3:5] = True


def test_ode_solvers_agree_on_a_trained_model(tiny_model):
    seeds = [0, 1, 2]
    ddim = generate(tiny_model, MASK, seeds, sampler="ddim", steps=200)
    dpm = generate(tiny_model, MASK, seeds, sampler="dpmpp", steps=200)
    dpm20 = generate(tiny_model, MASK, seeds, sampler="dpmpp", steps=20)
    assert (ddim - dpm).abs().mean() < 0.02
    assert (ddim - dpm20).abs().mean() < 0.1
    other = generate(tiny_model, MASK, [5, 6, 7], sampler="dpmpp", steps=20)
    assert (ddim - other).abs().mean() > 3 * (ddim - dpm).abs().mean()  # agreement is not trivial


def test_trained_model_follows_the_mask(tiny_model):
    """Moving the vessels moves the change: with the same seeds, images from two masks differ most
    where the masks differ (a model that ignored the mask would differ nowhere, or everywhere alike)."""
    other = MASK.T.copy()
    seeds = list(range(8))
    a = generate(tiny_model, MASK, seeds, sampler="dpmpp", steps=20)
    b = generate(tiny_model, other, seeds, sampler="dpmpp", steps=20)
    change = (a - b).abs().mean(dim=(0, 1))
    differ = torch.from_numpy(MASK != other)
    assert change[differ].mean() > 1.5 * change[~differ].mean()  # a model blind to the mask: ~1


def test_generate_is_deterministic_and_batch_independent(tiny_model):
    a = generate(tiny_model, MASK, [3], sampler="ddpm", steps=10)
    b = generate(tiny_model, MASK, [1, 3], sampler="ddpm", steps=10)
    assert torch.allclose(a[0], b[1], atol=1e-5)
    assert out_range(a)


def out_range(x):
    return x.min() >= -1 and x.max() <= 1


def test_stream_yields_every_step_then_the_final_image(tiny_model):
    frames = list(stream(tiny_model, MASK, [0], sampler="dpmpp", steps=6))
    assert [f.step for f in frames] == [1, 2, 3, 4, 5, 6, 6]
    assert not any(f.final for f in frames[:-1]) and frames[-1].final
    assert frames[0].x_t.shape == frames[0].x0.shape == (16, 16, 3) and frames[0].x_t.dtype == np.uint8
    final = generate(tiny_model, MASK, [0], sampler="dpmpp", steps=6)
    expected = ((final[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(frames[-1].images[0], expected)


def test_closing_the_stream_stops_sampling(tiny_model, monkeypatch):
    calls = []
    net = tiny_model.net
    original = net.forward
    monkeypatch.setattr(net, "forward", lambda *a: calls.append(1) or original(*a))
    frames = stream(tiny_model, MASK, [0], sampler="ddpm", steps=500)
    next(frames)
    frames.close()  # what the app's Stop button does
    assert len(calls) < 10


@pytest.mark.parametrize("options,message", [
    (dict(steps=0), "steps must be a whole number from 1 to 1000"),
    (dict(steps=10 ** 9), "steps must be a whole number from 1 to 1000"),
    (dict(guidance=-1.0), "guidance must be between 0 and 20"),
    (dict(guidance=float("nan")), "guidance must be between 0 and 20"),
    (dict(sampler="euler"), "unknown sampler 'euler'"),
])
def test_bad_options_are_named(tiny_model, options, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model, MASK, [0], **options)
    with pytest.raises(ValueError, match=message):  # the same message reaches a stream's consumer
        next(stream(tiny_model, MASK, [0], **options))


def test_mask_problems_are_named(tiny_model):
    with pytest.raises(ValueError, match="needs 16x16"):
        generate(tiny_model, np.ones((32, 32), bool), [0])
    with pytest.raises(ValueError, match="needs a vessel mask"):
        generate(tiny_model, None, [0])
    with pytest.raises(ValueError, match="2 masks for 3 seeds"):
        generate(tiny_model, np.stack([MASK, MASK]), [0, 1, 2])


def test_vessel_masks_threshold_at_zero():
    x = torch.tensor([[[[-0.5, 0.1], [0.0, 0.9]]]])
    assert vessel_masks(x).tolist() == [[[False, True], [False, True]]]


def _soft_line(gap_level: float) -> np.ndarray:
    """A 64 px soft output with one horizontal vessel (level 0.8) broken in the middle by three pixels at
    `gap_level`, and a one-pixel speck far from it."""
    soft = np.full((64, 64), -1.0, np.float32)
    soft[32, 8:56] = 0.8
    soft[32, 30:33] = gap_level
    soft[8, 8] = 0.8
    return soft


def test_a_dashed_vessel_is_mended_and_specks_dropped():
    from retree_core.tree_ops import MEND_LEVEL, cut_tree
    from scipy import ndimage

    faint = _soft_line(MEND_LEVEL / 2)  # a faint ridge: above the mending level, below the cut
    assert ndimage.label(faint > 0)[1] == 3  # cut at 0 alone: two dashes and the speck
    tree = cut_tree(faint)
    assert tree[32, 8:56].all() and ndimage.label(tree)[1] == 1 and not tree[8, 8]
    assert tree.sum() == 48  # the bridge is the ridge's centre line, nothing around it
    assert np.array_equal(cut_tree(faint, refine=False), faint > 0)
    dark = _soft_line(-0.9)  # background between the dashes: two vessels, not one
    assert ndimage.label(cut_tree(dark))[1] == 2
    big = cut_tree(faint, 256)  # enlarged: the bridge one model pixel (4 px) wide, the vessel smooth
    assert ndimage.label(big)[1] == 1 and 2 <= big[:, 124].sum() <= 6


@pytest.fixture(scope="module")
def tiny_vessel(tmp_path_factory):
    from retree_core.config import TrainConfig
    from retree_core.train import train
    from retree_core.weights import load_model

    out = tmp_path_factory.mktemp("vessel_run")
    train(TrainConfig(mode="vessel", preset="tiny", image_size=32, max_steps=3, sample_interval=100,
                      output_dir=str(out), progress=False))
    return load_model(out / "last.ckpt", role="vessel")


def test_dream_trees_redraws_implausible_trees_and_says_so(tiny_vessel):
    from retree_core.config import DiffusionConfig, net_config
    from retree_core.pipeline import REDRAW_SEED_STRIDE, dream_trees
    from retree_core.weights import LoadedModel

    trees, seeds = dream_trees(tiny_vessel, [4, 5], min_plausibility=0.0, steps=3)
    assert [t.shape for t in trees] == [(32, 32)] * 2 and trees[0].dtype == bool and seeds == [4, 5]
    # an untrained vessel model makes noise, which no real-tree statistic accepts: after the last of
    # max_tries draws the tree is None and its seed the last draw's
    draws = []
    trees, seeds = dream_trees(tiny_vessel, [0, 7], min_plausibility=0.5, max_tries=3, steps=3,
                               on_draw=lambda draw, tries: draws.append((draw, tries)))
    assert trees == [None, None] and seeds == [2 * REDRAW_SEED_STRIDE, 7 + 2 * REDRAW_SEED_STRIDE]
    assert draws == [(1, 3), (2, 3), (3, 3)]  # progress reported before each round
    with pytest.raises(ValueError, match="max_tries must be at least 1"):
        dream_trees(tiny_vessel, [0], max_tries=0)
    wrong = LoadedModel(None, net_config("tiny", "concat", 16), DiffusionConfig(), "concat")
    with pytest.raises(ValueError, match="needs a vessel model"):
        dream_trees(wrong, [0])


def test_trees_are_cut_at_the_size_asked_from_the_soft_output():
    x = torch.tensor([[[[-1.0, 0.2], [-1.0, 0.2]]]])  # a soft vessel edge between the two columns
    assert vessel_masks(x).tolist() == [[[False, True], [False, True]]]
    big = vessel_masks(x, 8, refine=False)
    assert big.shape == (1, 8, 8) and big[0, :, -1].all() and not big[0, :, 0].any()
    edge = int(np.argmax(big[0, 0]))  # where the interpolated soft map crosses 0: past the middle, not at it
    assert 4 < edge < 8
