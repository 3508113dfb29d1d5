"""The ReTree denoiser: a UNet with LSA transformer blocks at coarse resolutions.

One class serves the three diffusion roles: `vessel` (1 channel, unconditional), `concat` (mask
concatenated with the noisy image at the input) and `spade` (mask injected by SPADE GroupNorm in the
decoder); and the vessel segmenter, `segment` (photograph in, vessel logits out, t fixed at 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DiffusionConfig, NetConfig
from .blocks import DoubleConv, Down, TransformerBlock, Up, timestep_embedding


SIGMA_DATA = 0.5  # assumed standard deviation of images in [-1, 1] (as in EDM, Karras et al. 2022)


def eps_skip_coefficients(alpha_bar: Tensor, sigma_data: float = SIGMA_DATA, prediction: str = "eps") -> Tensor:
    """c(t) such that c(t) x_t is the best linear estimate of the noise in x_t = sqrt(ab) x0 + sqrt(1-ab) eps
    for data of variance sigma_data^2: Cov(eps, x_t) / Var(x_t). It is ~1 at pure noise, 0 at t = 0.
    For v prediction (v = sqrt(ab) eps - sqrt(1-ab) x0): Cov(v, x_t) / Var(x_t), 0 at both ends."""
    ab = alpha_bar.double()
    if prediction == "v":
        return ((ab * (1 - ab)).sqrt() * (1 - sigma_data ** 2) / (ab * sigma_data ** 2 + 1 - ab)).float()
    return ((1 - ab).sqrt() / (ab * sigma_data ** 2 + 1 - ab)).float()


class ReTreeUNet(nn.Module):
    """eps = net(x_t, t, mask). `mask` is (B, 1, H, W) in [-1, 1]; None or zeros is the null condition.

    With `cfg.input_skip` the output is c(t) x_t + UNet(x_t, t, mask) (see eps_skip_coefficients), given
    the schedule's alpha_bar; at high noise the network then starts from the right answer instead of
    having to learn to copy its input, which is most of what an untrained denoiser gets wrong.
    """

    def __init__(self, cfg: NetConfig, alpha_bar: Tensor | None = None, prediction: str = "eps"):
        super().__init__()
        self.cfg = cfg
        if cfg.input_skip and alpha_bar is None:
            raise ValueError("a network with input_skip needs the noise schedule's alpha_bar")
        skip = eps_skip_coefficients(alpha_bar, prediction=prediction) if cfg.input_skip else torch.zeros(0)
        self.register_buffer("eps_skip", skip, persistent=False)  # rebuilt from the configs, not saved
        c, g, p = cfg.channels, cfg.groups, cfg.patch_px
        spade_dec = (cfg.spade_hidden, p * p) if cfg.role == "spade" else None
        spade_enc = spade_dec if cfg.spade_encoder else None
        c_in = cfg.input_channels * p * p

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
        if cfg.styles:
            # one vector per dataset style, added to the timestep embedding. "any" (index 0) is never trained,
            # and all start at zero, so a warm start from a file without styles begins as that file's model
            self.style_emb = nn.Embedding(len(cfg.styles) + 1, cfg.emb_dim, padding_idx=0)
            nn.init.zeros_(self.style_emb.weight)

    def encode(self, x: Tensor, t: Tensor, mask: Tensor | None = None, style: Tensor | None = None
               ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """The encoder: feature maps per level (finest first), the timestep (and style) embedding and the SPADE
        condition. `style` (B,) holds NetConfig.style_index values; None is "any"."""
        cfg = self.cfg
        if cfg.conditional and mask is None:
            mask = torch.zeros_like(x[:, :1])
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = timestep_embedding(t, cfg.emb_dim).to(x.dtype)
        if style is not None and bool((style != 0).any()):
            if not cfg.styles:
                raise ValueError("this model was trained without styles; its only style is 'any'")
            emb = emb + self.style_emb(style.long().to(x.device).expand(x.shape[0])).to(emb.dtype)
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
        return skips, emb, cond

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None, style: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        skips, emb, cond = self.encode(x, t, mask, style)
        h = skips[-1]
        for block in self.bottleneck:
            h = block(h, cond)
        for up, attn, skip in zip(self.ups, self.up_attn, reversed(skips[:-1])):
            h = attn(up(h, skip, emb, cond))
        with torch.autocast(x.device.type, enabled=False):  # the output layer and the skip stay fp32 under
            out = self.outc(h.float())  # bf16 autocast: their rounding would shift the whole image's colour
        out = F.pixel_shuffle(out, cfg.patch_px) if cfg.patch_px > 1 else out
        if cfg.input_skip:
            out = out + self.eps_skip[t.long()].view(-1, 1, 1, 1).to(out.dtype) * x
        return out


def build_net(cfg: NetConfig, diffusion_cfg: DiffusionConfig | None = None) -> ReTreeUNet:
    """The denoiser for a NetConfig; the DiffusionConfig (default: the default schedule) supplies the
    input skip's coefficients."""
    from ..diffusion import NoiseSchedule

    diffusion_cfg = diffusion_cfg or DiffusionConfig()
    alpha_bar = NoiseSchedule(diffusion_cfg).alpha_bar if cfg.input_skip else None
    return ReTreeUNet(cfg, alpha_bar, diffusion_cfg.prediction)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
