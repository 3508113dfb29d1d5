"""Building blocks of the ReTree UNet: normalisation (plain or SPADE), conv blocks, up/down, LSA transformer.

Every block takes `(x, emb, cond)` so the UNet can chain them without caring which are conditioned;
`cond` is the vessel mask (B, 1, H, W) in [-1, 1], or zeros for the classifier-free "null" condition.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int, groups: int, affine: bool = True) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `groups` that divides `channels`."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, affine=affine)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class SpadeGroupNorm(nn.Module):
    """SPADE: GroupNorm without affine, then x * (1 + gamma) + beta with gamma, beta predicted per pixel
    from the mask resized to the feature map (area resampling keeps thin vessels as partial coverage)."""

    def __init__(self, channels: int, groups: int, hidden: int, cond_channels: int = 1):
        super().__init__()
        self.norm = group_norm(channels, groups, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.SiLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)
        for conv in (self.gamma, self.beta):  # start as a plain GroupNorm
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        size = x.shape[-2:]
        if cond.shape[-2:] != size:
            down = cond.shape[-1] > size[-1]
            cond = F.interpolate(cond, size=size, mode="area" if down else "bilinear")
        h = self.shared(cond.to(x.dtype))
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


Spade = tuple[int, int]  # (hidden width, mask channels) of a SPADE norm; None means plain GroupNorm


class Norm(nn.Module):
    """GroupNorm, or SPADE GroupNorm when `spade` is given; same call either way."""

    def __init__(self, channels: int, groups: int, spade: Spade | None = None):
        super().__init__()
        self.spade = spade is not None
        self.norm = SpadeGroupNorm(channels, groups, *spade) if self.spade else group_norm(channels, groups)

    def forward(self, x: Tensor, cond: Tensor | None) -> Tensor:
        return self.norm(x, cond) if self.spade else self.norm(x)


class DoubleConv(nn.Module):
    """(conv3x3, norm, GELU, conv3x3, norm), with an optional residual path (then GELU after the sum)."""

    def __init__(self, c_in: int, c_out: int, groups: int, residual: bool = False,
                 spade: Spade | None = None):
        super().__init__()
        if residual and c_in != c_out:
            raise ValueError("a residual DoubleConv keeps its width")
        self.residual = residual
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm1 = Norm(c_out, groups, spade)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = Norm(c_out, groups, spade)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.norm1(self.conv1(x), cond)
        h = self.norm2(self.conv2(F.gelu(h)), cond)
        return F.gelu(x + h) if self.residual else h


class Down(nn.Module):
    """Max-pool, a residual DoubleConv, a widening DoubleConv, plus the time embedding (SiLU + Linear)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, spade: Spade | None = None):
        super().__init__()
        self.res = DoubleConv(c_in, c_in, groups, residual=True, spade=spade)
        self.conv = DoubleConv(c_in, c_out, groups, spade=spade)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))

    def forward(self, x: Tensor, emb: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.conv(self.res(F.max_pool2d(x, 2), cond), cond)
        return x + self.emb(emb)[:, :, None, None]


class Up(nn.Module):
    """Bilinear up-sampling, concatenation with the skip, two DoubleConvs, plus the time embedding."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, spade: Spade | None = None):
        super().__init__()
        self.res = DoubleConv(c_in, c_in, groups, residual=True, spade=spade)
        self.conv = DoubleConv(c_in, c_out, groups, spade=spade)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))

    def forward(self, x: Tensor, skip: Tensor, emb: Tensor, cond: Tensor | None = None) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        x = self.conv(self.res(torch.cat([skip, x], dim=1), cond), cond)
        return x + self.emb(emb)[:, :, None, None]


class LocalitySelfAttention(nn.Module):
    """Multi-head self-attention with a learnable temperature and the diagonal masked (Lee et al. 2021,
    "Vision Transformer for Small-Size Datasets"): tokens cannot attend to themselves, which sharpens
    attention on small data."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log((dim // heads) ** -0.5)))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # SDPA scales by 1/sqrt(head_dim); pre-scaling q turns that into the learnable temperature.
        q = q * (self.log_temperature.exp() * math.sqrt(d // self.heads))
        off_diagonal = torch.eye(n, device=x.device) == 0  # (a float eye: ONNX runtimes lack a boolean EyeLike)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=off_diagonal)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm ViT encoder block with LSA over the pixels of a feature map."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LocalitySelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(self.norm1(tokens))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)
