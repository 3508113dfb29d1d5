"""The ReTree denoiser: a UNet with LSA transformer blocks at coarse resolutions.

One class serves the three roles: `vessel` (1 channel, unconditional), `concat` (mask concatenated with
the noisy image at the input) and `spade` (mask injected by SPADE GroupNorm in the decoder).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import NetConfig
from .blocks import DoubleConv, Down, TransformerBlock, Up, timestep_embedding


class ReTreeUNet(nn.Module):
    """eps = net(x_t, t, mask). `mask` is (B, 1, H, W) in [-1, 1]; None or zeros is the null condition."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        c, g, p = cfg.channels, cfg.groups, cfg.patch_px
        spade_dec = (cfg.spade_hidden, p * p) if cfg.role == "spade" else None
        spade_enc = spade_dec if cfg.spade_encoder else None
        c_in = (cfg.image_channels + (cfg.role == "concat")) * p * p

        def attention(level: int, width: int) -> nn.Module:
            if not cfg.has_attention(level):
                return nn.Identity()
            return nn.Sequential(*[TransformerBlock(width, cfg.attn_heads) for _ in range(cfg.attn_depth)])

        self.inc = DoubleConv(c_in, c[0], g)
        self.inc_res = DoubleConv(c[0], c[0], g, residual=True, spade=spade_enc)
        self.downs = nn.ModuleList(Down(c[i - 1], c[i], cfg.emb_dim, g, spade_enc) for i in range(1, len(c)))
        self.down_attn = nn.ModuleList(attention(i, c[i]) for i in range(1, len(c)))
        self.bottleneck = nn.ModuleList([
            DoubleConv(c[-1], cfg.bottleneck_channels, g, spade=spade_dec),
            DoubleConv(cfg.bottleneck_channels, cfg.bottleneck_channels, g, spade=spade_dec),
            DoubleConv(cfg.bottleneck_channels, c[-1], g, spade=spade_dec),
        ])
        ups, up_attn, width = [], [], c[-1]
        for level in reversed(range(len(c) - 1)):
            out = c[max(level - 1, 0)]
            ups.append(Up(width + c[level], out, cfg.emb_dim, g, spade_dec))
            up_attn.append(attention(level, out))
            width = out
        self.ups, self.up_attn = nn.ModuleList(ups), nn.ModuleList(up_attn)
        self.outc = nn.Conv2d(width, cfg.image_channels * p * p, 1)

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if cfg.conditional and mask is None:
            mask = torch.zeros_like(x[:, :1])
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = timestep_embedding(t, cfg.emb_dim).to(x.dtype)
        h = torch.cat([x, mask.to(x.dtype)], dim=1) if cfg.role == "concat" else x
        if cfg.patch_px > 1:
            h = F.pixel_unshuffle(h, cfg.patch_px)
        # SPADE sees the mask folded like the image, so sub-patch vessel positions are not averaged away.
        cond = None
        if cfg.role == "spade":
            cond = F.pixel_unshuffle(mask, cfg.patch_px) if cfg.patch_px > 1 else mask

        h = self.inc_res(self.inc(h), cond)
        skips = [h]
        for down, attn in zip(self.downs, self.down_attn):
            h = attn(down(h, emb, cond))
            skips.append(h)
        for block in self.bottleneck:
            h = block(h, cond)
        for up, attn, skip in zip(self.ups, self.up_attn, reversed(skips[:-1])):
            h = attn(up(h, skip, emb, cond))
        out = self.outc(h)
        return F.pixel_shuffle(out, cfg.patch_px) if cfg.patch_px > 1 else out


def build_net(cfg: NetConfig) -> ReTreeUNet:
    return ReTreeUNet(cfg)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
