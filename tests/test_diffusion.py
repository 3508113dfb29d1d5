"""Schedules, noising and the loss against closed forms."""
import math

import numpy as np
import pytest
import torch

from retree_core.config import DiffusionConfig
from retree_core.diffusion import NoiseSchedule, cosine_betas, diffusion_loss, linear_betas


def test_linear_schedule_matches_paper():
    betas = linear_betas(1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.all(np.diff(betas) > 0)
    s = NoiseSchedule(DiffusionConfig())
    expected = np.cumprod(1 - betas)
    assert np.allclose(s.alpha_bar.numpy(), expected)
    # alpha_bar_T for the paper's schedule is ~4e-5: x_T is almost pure noise
    assert 1e-5 < s.alpha_bar[-1].item() < 1e-4


def test_cosine_schedule_closed_form():
    T = 1000
    s = NoiseSchedule(DiffusionConfig(schedule="cosine", timesteps=T))
    t = np.arange(1, T + 1) / T
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    closed = np.array([f(u) / f(0) for u in t])
    assert np.allclose(s.alpha_bar.numpy()[:-20], closed[:-20], rtol=1e-6)  # clipping acts only at the end
    assert cosine_betas(T).max() <= 0.999


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="unknown noise schedule 'sigmoid'"):
        NoiseSchedule(DiffusionConfig(schedule="sigmoid"))


def test_add_noise_is_q_sample():
    s = NoiseSchedule()
    x0, eps = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 499, 999])
    xt = s.add_noise(x0, t, eps)
    for i, ti in enumerate(t.tolist()):
        ab = s.alpha_bar[ti].item()
        assert torch.allclose(xt[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i], atol=1e-5)
    # the marginal variance of x_t is 1 for unit-variance data
    x0 = torch.randn(20000)
    xt = s.add_noise(x0, torch.full((20000,), 300), torch.randn(20000))
    assert xt.var().item() == pytest.approx(1.0, abs=0.05)


def test_alpha_bar_minus_one_is_clean():
    s = NoiseSchedule()
    assert s.alpha_bar_at(torch.tensor([-1])).item() == 1.0


@pytest.mark.parametrize("spacing", ["uniform", "logsnr"])
@pytest.mark.parametrize("steps", [1, 2, 20, 300, 1000])
def test_spaced_timesteps(steps, spacing):
    ts = NoiseSchedule().spaced(steps, spacing)
    assert len(ts) == steps and ts[0] == 999
    assert steps == 1 or ts[-1] == 0
    assert torch.all(ts[1:] < ts[:-1])


def test_logsnr_spacing_is_even_in_log_snr():
    s = NoiseSchedule()
    ts = s.spaced(20, "logsnr")
    ab = s.alpha_bar[ts]
    gaps = torch.diff(torch.log(ab / (1 - ab)))[:-3]  # the last few are bent by integer rounding
    assert gaps.min() > 0.8 * gaps.mean() and gaps.max() < 1.25 * gaps.mean()
    assert torch.equal(s.spaced(1000, "uniform"), torch.arange(999, -1, -1))


@pytest.mark.parametrize("steps", [0, 1001])
def test_spaced_rejects_out_of_range(steps):
    with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
        NoiseSchedule().spaced(steps)


def test_loss_is_weighted_l1_plus_mse():
    pred, eps = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0])
    assert diffusion_loss(pred, eps, DiffusionConfig()).item() == pytest.approx((1 + 2 + 1 + 4) / 2)
    cfg = DiffusionConfig(l1_weight=0.0, mse_weight=2.0)
    assert diffusion_loss(pred, eps, cfg).item() == pytest.approx(2 * (1 + 4) / 2)
