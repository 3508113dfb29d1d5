"""The forward process: noise schedules, noising, timestep spacing and the paper's L1 + MSE loss."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .config import DiffusionConfig


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al.'s linear schedule (the paper's: 1e-4 to 0.02 over T = 1000 steps)."""
    return np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)


def cosine_betas(timesteps: int, offset: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2)."""
    t = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    alpha_bar = np.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, max_beta)


class NoiseSchedule:
    """alpha_bar_t for t = 0..T-1 and the operations built on it (all in float64, returned as float32)."""

    def __init__(self, cfg: DiffusionConfig | None = None):
        self.cfg = cfg = cfg or DiffusionConfig()
        if cfg.schedule == "linear":
            betas = linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        elif cfg.schedule == "cosine":
            betas = cosine_betas(cfg.timesteps)
        else:
            raise ValueError(f"unknown noise schedule {cfg.schedule!r}; expected linear or cosine")
        self.timesteps = cfg.timesteps
        self.betas = torch.from_numpy(betas)
        self.alpha_bar = torch.cumprod(1 - self.betas, dim=0)

    def alpha_bar_at(self, t: Tensor) -> Tensor:
        """alpha_bar for integer timesteps t; t = -1 means the clean image (alpha_bar = 1)."""
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])
        return padded[t.long().cpu() + 1].float().to(t.device)

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """q(x_t | x_0): sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps."""
        ab = self.alpha_bar_at(t).view(-1, *[1] * (x0.ndim - 1)).to(x0.device)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the network learns to predict for x_t = add_noise(x0, t, noise): eps, or v."""
        if self.cfg.prediction == "eps":
            return noise
        ab = self.alpha_bar_at(t).view(-1, *[1] * (x0.ndim - 1)).to(x0.device)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def item_weights(self, t: Tensor) -> Tensor | None:
        """Per-item loss weights: None (uniform) or min-SNR-gamma, min(SNR, gamma) / SNR for eps and
        min(SNR, gamma) / (SNR + 1) for v (the same weighting of the implied x0 error, Hang et al. 2023)."""
        if self.cfg.loss_weighting == "uniform":
            return None
        ab = self.alpha_bar_at(t).double()
        snr = ab / (1 - ab)
        clipped = snr.clamp(max=self.cfg.min_snr_gamma)
        return (clipped / (snr if self.cfg.prediction == "eps" else snr + 1)).float()

    def eps_fn(self, fn):
        """The network's output as a noise prediction, which is what the samplers take (v: eps =
        sqrt(ab) v + sqrt(1 - ab) x_t); the same function for eps prediction."""
        if self.cfg.prediction == "eps":
            return fn

        def eps(x: Tensor, t: Tensor) -> Tensor:
            ab = self.alpha_bar_at(t).view(-1, *[1] * (x.ndim - 1)).to(x.device)
            return ab.sqrt() * fn(x, t).float() + (1 - ab).sqrt() * x

        return eps

    def spaced(self, steps: int, spacing: str = "uniform") -> Tensor:
        """`steps` strictly descending integer timesteps from T-1 to 0.

        uniform: evenly spaced in t ("trailing": the first step starts from pure noise whatever the
        count; 1000 steps of a T=1000 model is every timestep, as in the paper).
        logsnr: evenly spaced in log signal-to-noise ratio, as DPM-Solver recommends for few steps in
        pixel space; rounded to integers and kept strictly descending near t = 0.
        """
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be between 1 and {self.timesteps}, got {steps}")
        if steps == 1:
            return torch.tensor([self.timesteps - 1])
        if spacing == "uniform":
            return torch.from_numpy(np.round(np.linspace(self.timesteps - 1, 0, steps)).astype(np.int64))
        if spacing != "logsnr":
            raise ValueError(f"unknown spacing {spacing!r}; expected uniform or logsnr")
        ab = self.alpha_bar.numpy()
        log_snr = np.log(ab / (1 - ab))  # decreasing in t
        targets = np.linspace(log_snr[-1], log_snr[0], steps)
        ts = np.searchsorted(-log_snr, -targets).clip(0, self.timesteps - 1)
        ts[0] = self.timesteps - 1
        for i in range(1, steps):  # strictly descending, leaving room for the steps still to come
            ts[i] = min(ts[i], ts[i - 1] - 1)
        for i in range(steps - 1, -1, -1):
            ts[i] = max(ts[i], steps - 1 - i)
        return torch.from_numpy(ts.astype(np.int64))


def diffusion_loss(eps_pred: Tensor, eps: Tensor, cfg: DiffusionConfig, weight: Tensor | None = None,
                   item_weight: Tensor | None = None) -> Tensor:
    """The paper's loss on the noise (or on v): l1_weight * L1 + mse_weight * MSE, optionally pixel-weighted
    (`weight`, a weighted mean) or item-weighted (`item_weight` (B,), e.g. min-SNR, a mean of weighted items)."""
    err = eps_pred.float() - eps.float()
    per_pixel = cfg.l1_weight * err.abs() + cfg.mse_weight * err.square()
    if item_weight is not None:
        return (per_pixel.flatten(1).mean(1) * item_weight.to(per_pixel)).mean()
    if weight is None:
        return per_pixel.mean()
    weight = weight.expand_as(per_pixel)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1)
