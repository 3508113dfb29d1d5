"""Reverse-process samplers sharing one signature and one callback contract.

    sampler(eps_fn, x, schedule, steps, *, generators=None, callback=None, clip_x0=True, spacing=..., skip=0) -> x0

`eps_fn(x_t, t)` predicts the noise (conditioning and guidance are already bound in, see `guided`);
`x` is the starting noise; `steps` is the number of network evaluations, placed on the timesteps
by `spacing` (each sampler has the default its authors recommend); `skip` leaves out the first steps of
that schedule, so `x` is then a sample at the first remaining timestep (SDEdit). After each evaluation the
callback receives a `Step` (index, total, t, x_t, predicted clean image) so a caller can stream frames;
raising `StopSampling` from it ends the run at once. Fresh noise is drawn per sample from that
sample's own generator, so an image depends on its seed only, not on the batch it was in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .config import SAMPLER_LABELS
from .diffusion import NoiseSchedule

EpsFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Step:
    index: int  # 0-based step number
    total: int
    t: int  # diffusion timestep of x
    x: Tensor  # x_t, the noisy sample at this step
    x0: Tensor  # current prediction of the clean image


Callback = Callable[[Step], None]


class StopSampling(Exception):
    """Raised by a callback to end sampling early (the app's Stop button)."""


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, so each image is a function of its own seed."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn(shape: Sequence[int], generators: Sequence[torch.Generator] | None,
          device: torch.device | str = "cpu") -> Tensor:
    """Standard normal noise of `shape` (B, ...): per-sample from `generators` when given."""
    if generators is None:
        return torch.randn(tuple(shape), device=device)
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generators]).to(device)


def guided(net: torch.nn.Module, mask: Tensor | None, guidance: float = 1.0, style: Tensor | None = None) -> EpsFn:
    """eps_fn for a network and a mask, with classifier-free guidance:
    eps = eps_null + guidance * (eps_mask - eps_null); guidance 1 is the plain conditional model. A `style`
    (B,) of NetConfig.style_index values (None: "any") conditions both terms: the guidance is the mask's."""
    extra = {} if style is None else {"style": style}
    if mask is None or guidance == 1.0:
        return lambda x, t: net(x, t, mask, **extra)
    null = torch.zeros_like(mask)
    if style is not None:
        extra = {"style": torch.cat([style, style])}

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        eps_c, eps_u = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([mask, null]), **extra).chunk(2)
        return eps_u + guidance * (eps_c - eps_u)

    return eps_fn


def predict(eps_fn: EpsFn, x: Tensor, t: int, schedule: NoiseSchedule, clip_x0: bool) -> tuple[Tensor, Tensor]:
    """(eps, x0) at timestep t; with clipping, eps is re-derived from the clipped x0 to stay consistent."""
    t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    ab = schedule.alpha_bar_at(torch.tensor(t)).item()
    eps = eps_fn(x, t_batch).float()
    x0 = (x - (1 - ab) ** 0.5 * eps) / ab ** 0.5
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = (x - ab ** 0.5 * x0) / (1 - ab) ** 0.5
    return eps, x0


def schedule_pairs(schedule: NoiseSchedule, steps: int, spacing: str,
                   skip: int = 0) -> list[tuple[int, int, float, float]]:
    """(t, t_next, alpha_bar_t, alpha_bar_next) per step, the first `skip` left out; t_next = -1 is the
    clean image."""
    ts = schedule.spaced(steps, spacing).tolist()
    nxt = ts[1:] + [-1]
    ab = schedule.alpha_bar_at(torch.tensor(ts)).tolist()
    ab_next = schedule.alpha_bar_at(torch.tensor(nxt)).tolist()
    return list(zip(ts, nxt, ab, ab_next))[skip:]


@torch.no_grad()
def ddpm(eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule, steps: int, *,
         generators: Sequence[torch.Generator] | None = None, callback: Callback | None = None,
         clip_x0: bool = True, spacing: str = "uniform", skip: int = 0) -> Tensor:
    """Ancestral DDPM (Ho et al.; the paper's sampler): x_next ~ q(x_next | x_t, x0_hat), the posterior
    mean with the posterior variance. With fewer steps than T it runs on the respaced schedule."""
    pairs = schedule_pairs(schedule, steps, spacing, skip)
    for i, (t, _, ab, ab_next) in enumerate(pairs):
        _, x0 = predict(eps_fn, x, t, schedule, clip_x0)
        if callback:
            callback(Step(i, len(pairs), t, x, x0))
        x = ddpm_step(x, x0, ab, ab_next, generators)
    return x


def ddpm_step(x: Tensor, x0: Tensor, ab: float, ab_next: float,
              generators: Sequence[torch.Generator] | None) -> Tensor:
    """x_next ~ q(x_next | x_t, x0): the posterior mean plus fresh noise of the posterior variance (none
    when x_next is the clean image)."""
    beta = 1 - ab / ab_next
    mean = (ab_next ** 0.5 * beta * x0 + (1 - beta) ** 0.5 * (1 - ab_next) * x) / (1 - ab)
    var = beta * (1 - ab_next) / (1 - ab)
    return mean + var ** 0.5 * randn(x.shape, generators, x.device) if ab_next < 1 else mean


@torch.no_grad()
def ddim(eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule, steps: int, *,
         generators: Sequence[torch.Generator] | None = None, callback: Callback | None = None,
         clip_x0: bool = True, spacing: str = "uniform", eta: float = 0.0, skip: int = 0) -> Tensor:
    """DDIM (Song et al.): eta = 0 is the deterministic probability-flow solver, eta = 1 matches DDPM."""
    pairs = schedule_pairs(schedule, steps, spacing, skip)
    for i, (t, _, ab, ab_next) in enumerate(pairs):
        eps, x0 = predict(eps_fn, x, t, schedule, clip_x0)
        if callback:
            callback(Step(i, len(pairs), t, x, x0))
        sigma = eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)) ** 0.5
        x = ab_next ** 0.5 * x0 + max(1 - ab_next - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * randn(x.shape, generators, x.device)
    return x


@torch.no_grad()
def dpmpp_2m(eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule, steps: int, *,
             generators: Sequence[torch.Generator] | None = None, callback: Callback | None = None,
             clip_x0: bool = True, spacing: str = "logsnr", skip: int = 0) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in log-SNR on the data prediction. Deterministic: `generators` is accepted for the shared signature."""
    x0_prev, h_prev = None, None
    pairs = schedule_pairs(schedule, steps, spacing, skip)
    for i, (t, _, ab, ab_next) in enumerate(pairs):
        _, x0 = predict(eps_fn, x, t, schedule, clip_x0)
        if callback:
            callback(Step(i, len(pairs), t, x, x0))
        if ab_next >= 1:  # the last step lands on the clean image
            x = x0
            break
        h = 0.5 * (math.log(ab_next / (1 - ab_next)) - math.log(ab / (1 - ab)))  # lambda = log(alpha/sigma)
        d = x0
        if x0_prev is not None:  # second order from the second step on
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        sigma_ratio = ((1 - ab_next) / (1 - ab)) ** 0.5
        x = sigma_ratio * x - ab_next ** 0.5 * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {"dpmpp": dpmpp_2m, "ddim": ddim, "ddpm": ddpm}
assert SAMPLERS.keys() == SAMPLER_LABELS.keys(), "config.SAMPLER_LABELS names the samplers offered"


def get_sampler(name: str) -> Callable[..., Tensor]:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}") from None
