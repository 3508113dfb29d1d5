"""Samplers: exactness on Gaussian data (where the optimal denoiser is known), determinism, batch
independence, the callback contract and early stopping."""

import pytest
import torch

from retree_core.diffusion import NoiseSchedule
from retree_core.samplers import SAMPLERS, Step, StopSampling, get_sampler, make_generators, randn

MU, STD = 0.3, 0.2  # data distribution N(MU, STD^2) per pixel


def gaussian_eps(schedule: NoiseSchedule):
    """The exact noise predictor E[eps | x_t] for data N(MU, STD^2)."""
    def eps_fn(x, t):
        ab = schedule.alpha_bar_at(t).view(-1, *[1] * (x.ndim - 1))
        return (x - ab.sqrt() * MU) * (1 - ab).sqrt() / (ab * STD ** 2 + 1 - ab)
    return eps_fn


def run(name, steps, seeds, schedule=None, **kw):
    schedule = schedule or NoiseSchedule()
    gens = make_generators(seeds)
    x = randn((len(seeds), 1, 8, 8), gens)
    return get_sampler(name)(gaussian_eps(schedule), x, schedule, steps, generators=gens, clip_x0=False, **kw), x


@pytest.mark.parametrize("name,steps,tol", [("ddim", 1000, 0.01), ("ddim", 100, 0.05),
                                           ("dpmpp", 20, 0.01), ("dpmpp", 50, 0.002)])
def test_ode_solvers_follow_the_exact_flow(name, steps, tol):
    # For Gaussian data the probability-flow ODE maps the noise z to MU + STD * z (up to alpha_bar_T ~ 4e-5).
    out, z = run(name, steps, [0, 1])
    assert (out - (MU + STD * z)).abs().max().item() < tol


def test_dpmpp_is_more_accurate_than_ddim_at_equal_steps():
    def error(name):
        out, z = run(name, 10, [0])
        return (out - (MU + STD * z)).abs().mean().item()
    assert error("dpmpp") < 0.2 * error("ddim")


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_stochastic_samplers_reach_the_data_distribution(name):
    kw = {"eta": 1.0} if name == "ddim" else {}
    out, _ = run(name, 1000, list(range(64)), **kw)
    assert out.mean().item() == pytest.approx(MU, abs=0.01)
    assert out.std().item() == pytest.approx(STD, rel=0.05)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_same_image_whatever_the_batch(name):
    kw = {"eta": 0.5} if name == "ddim" else {}
    alone, _ = run(name, 10, [7], **kw)
    batched, _ = run(name, 10, [3, 5, 7], **kw)
    again, _ = run(name, 10, [7], **kw)
    assert torch.equal(alone, again)
    assert torch.allclose(alone[0], batched[2], atol=1e-6)
    assert not torch.allclose(batched[0], batched[2])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_sees_every_step(name):
    seen: list[Step] = []
    run(name, 7, [0], callback=seen.append)
    assert [s.index for s in seen] == list(range(7))
    assert all(s.total == 7 for s in seen)
    assert seen[0].t == 999 and seen[-1].t == 0
    assert all(s.x.shape == s.x0.shape == (1, 1, 8, 8) for s in seen)
    # the clean-image prediction converges to the data mean region as t falls
    assert abs(seen[-1].x0.mean().item() - MU) < abs(seen[0].x.mean().item() - MU) + 0.5


def test_stop_sampling_ends_the_run():
    calls = []

    def stop_at_three(step: Step):
        calls.append(step.index)
        if step.index == 2:
            raise StopSampling

    with pytest.raises(StopSampling):
        run("dpmpp", 50, [0], callback=stop_at_three)
    assert calls == [0, 1, 2]


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        get_sampler("euler")


def test_generators_must_match_batch():
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn((3, 1, 4, 4), make_generators([0, 1]))


def test_ddim_eta_one_is_ddpm():
    a, _ = run("ddpm", 20, list(range(32)))
    b, _ = run("ddim", 20, list(range(32)), eta=1.0)
    # same maths (posterior variance), same noise stream: identical samples
    assert torch.allclose(a, b, atol=1e-5)
