"""Mask-conditioned super-resolution (role `sr`): a generated fundus image up by `sr_scale` (128 -> 512),
with the full-resolution vessel mask as a second input, so that fine vessels follow the mask instead of
being invented.

The network is a ReTree UNet reading the bicubic-upsampled image and the mask and predicting the
residual to add to the bicubic image. It trains in the shared loop (`train --mode sr`) on real
photographs (the input is the target area-downsampled) with the paper's losses: L1, SSIM, an adversarial
term (the BCE of a mask-conditioned patch discriminator) and a perceptual term on the features of the
project's own vessel segmenter (ImageNet networks cannot be downloaded here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import compute
from .config import NetConfig, TrainConfig
from .images import from_uint8, mask_to_tensor, to_uint8
from .logs import log
from .weights import LoadedModel


def downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The training input: the target area-averaged by `scale` (what a smaller photograph would hold)."""
    return F.avg_pool2d(hr, scale) if scale > 1 else hr


def noisy_input(lr: torch.Tensor, items: Sequence[tuple[int, int]], max_std: float) -> torch.Tensor:
    """Conditioning augmentation (as in cascaded diffusion models, Ho et al. 2021): Gaussian noise of a
    std drawn uniformly from [0, max_std] per item, from the item's own seed, so that the model learns to
    clean the grain a generator leaves instead of enlarging it; the target stays the clean photograph."""
    if max_std <= 0:
        return lr
    noisy = []
    for image, (_, seed) in zip(lr, items):
        g = torch.Generator().manual_seed(seed)
        std = torch.rand(1, generator=g) * max_std
        noisy.append(image + std.to(image) * torch.randn(image.shape, generator=g).to(image))
    return torch.stack(noisy).clamp(-1, 1)


def distracted_masks(masks: torch.Tensor, items: Sequence[tuple[int, int]], share: float) -> torch.Tensor:
    """Masks in [-1, 1] where, for about `share` of the items (drawn from each item's seed), the next item's
    mask mirrored joins the item's own: vessels its photograph does not show. Trained so, a super-resolution
    model cannot take every mask vessel as certain and draws each as strongly as its input shows it (the
    shipped one, trained on exact masks, makes vessels easier to find than photographs do: bench/sr_floor.py)."""
    if share <= 0 or len(masks) < 2:
        return masks
    out = masks.clone()
    for i, (_, seed) in enumerate(items):
        if torch.rand(1, generator=torch.Generator().manual_seed(seed + 1)).item() < share:  # not the noise's draw
            out[i] = torch.maximum(out[i], masks[(i + 1) % len(masks)].flip(-1))
    return out


def bicubic(lr: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic upsampling of images in [-1, 1] to `size` (H, W): the baseline and the network's base."""
    return F.interpolate(lr, size=tuple(size), mode="bicubic", align_corners=False).clamp(-1, 1)


def sr_forward(net: nn.Module, lr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) image and (B, 1, H, W) mask, both in [-1, 1] -> (B, 3, H, W): bicubic + residual."""
    base = bicubic(lr, mask.shape[-2:])
    t = torch.zeros(lr.shape[0], dtype=torch.long, device=lr.device)
    return (base + net(torch.cat([base, mask.to(base.dtype)], dim=1), t)).clamp(-1, 1)


@compute.on_compute_thread
@torch.inference_mode()
def upscale(model: LoadedModel, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 (B, h, w, 3) or (h, w, 3) images and bool masks at the output size -> uint8 images there.
    The output size is the masks' size (a multiple of the network's stride; the model's own is best)."""
    cfg = model.net_cfg
    if cfg.role != "sr":
        raise ValueError(f"upscaling needs an sr model, not a {cfg.role!r} one")
    single = np.asarray(images).ndim == 3
    images, masks = (np.asarray(images)[None], np.asarray(masks)[None]) if single else (images, masks)
    height, width = masks.shape[1:3]
    if height % cfg.stride or width % cfg.stride:
        raise ValueError(f"masks are {width}x{height} px; this sr model needs multiples of {cfg.stride}")
    device = next(model.net.parameters()).device
    lr = from_uint8(images[..., :3]).to(device)
    out = to_uint8(sr_forward(model.net, lr, mask_to_tensor(masks).to(device)))
    return out[0] if single else out


def fits(sr: LoadedModel | None, image_px: int) -> bool:
    """Whether `sr` takes images of `image_px` (its output size divided by its factor)."""
    return sr is not None and sr.net_cfg.sr_input_px == image_px


def shipped_path(role: str, image_px: int, weights_dir: Path | None = None) -> Path | None:
    """The shipped file of `role` (sr or treesr) that takes `image_px` images: the one named after its role
    if it fits, else the first other by name (weights/sr_x8.safetensors for a 64 px generator); None if none."""
    from .weights import WEIGHTS_DIR, read_model_info

    folder = Path(weights_dir or WEIGHTS_DIR)
    for path in sorted(folder.glob("*.safetensors"), key=lambda p: (p.stem != role, p.name)):
        net = (read_model_info(path) or {}).get("net")  # the header only; unreadable files are skipped
        if not isinstance(net, dict) or net.get("role") != role:
            continue
        size, scale = net.get("image_size"), net.get("sr_scale", NetConfig.sr_scale)
        if isinstance(size, int) and isinstance(scale, int) and scale > 0 and size // scale == image_px:
            return path
    return None


def choose_sr(choice: str | None, image_px: int, device: str = "cpu", role: str = "sr") -> LoadedModel | None:
    """The super-resolution model (`role` sr, or treesr for stage-1 trees) for a generator's output size:
    "none" or None for none, "auto" for the shipped one that fits (`shipped_path`) if any, or a weights
    name/path (which must fit)."""
    from .weights import load_model

    if choice in (None, "none"):
        return None
    if choice == "auto":
        path = shipped_path(role, image_px)
        return None if path is None else load_model(path, role=role, device=device)
    model = load_model(choice, role=role, device=device)
    if not fits(model, image_px):
        raise ValueError(f"{role} model {choice}: it upscales {model.net_cfg.sr_input_px} px "
                         f"images, but the generator makes {image_px} px ones")
    return model


# ---- losses

def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum())[:, None] * (g / g.sum())[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5), per channel, of
    images in a range of width `data_range` ([-1, 1] by default). Always in fp32: its variances are
    differences of near-equal terms, which bf16 autocast would round to noise."""
    with torch.autocast(a.device.type, enabled=False):
        return _ssim(a.float(), b.float(), data_range)


def _ssim(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    channels = a.shape[1]
    window = _gaussian_window().to(a)[None, None].expand(channels, 1, -1, -1)
    blur = lambda x: F.conv2d(x, window, groups=channels)  # noqa: E731 (valid part only)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return score.mean()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


HIGH_PASS_GAIN = 20.0  # a photograph's fine texture (a few grey levels) brought to the image's scale


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """What a 5x5 binomial blur removes from (B, C, H, W) images: their fine texture and grain."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device)
    k = (k[:, None] * k[None] / 256).to(x.dtype).expand(x.shape[1], 1, 5, 5)
    return x - F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


class PatchDiscriminator(nn.Module):
    """A small PatchGAN critic of (image, mask) pairs: a logit per patch for "a real photograph of this
    vessel tree", so the adversarial term also rewards vessels that sit where the mask has them. It sees the
    image and its fine texture amplified (`high_pass`): on the image alone it stayed at chance (BCE 0.693
    after 300 steps on the shipped model's outputs), since their difference from a photograph is a grain of
    a grey level or two; with the texture it told them apart within 50 steps (docs/experiments.md)."""

    def __init__(self, width: int = 32, depth: int = 3):
        super().__init__()
        layers, c_in = [], 7  # image, its texture, mask
        for i in range(depth):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                       nn.GroupNorm(min(8, c_out), c_out) if i else nn.Identity(), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, HIGH_PASS_GAIN * high_pass(image), mask.to(image.dtype)], dim=1))


class SegmenterFeatures(nn.Module):
    """Frozen encoder activations of a vessel segmenter (the perceptual network), one map per level."""

    def __init__(self, segmenter: nn.Module):
        super().__init__()
        self.segmenter = segmenter.eval().requires_grad_(False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        t = torch.zeros(image.shape[0], dtype=torch.long, device=image.device)
        return self.segmenter.encode(image, t)[0]


class SRObjective:
    """The super-resolution losses and the discriminator that the adversarial term needs.

    `generator_loss` is the loss the training loop backpropagates into the SR network; `discriminator_step`
    then updates the critic on the same batch. Its weights and optimiser travel in the checkpoint.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.scale = cfg, cfg.sr_scale
        self.disc = PatchDiscriminator().to(device).requires_grad_(False)  # trained in discriminator_step only
        self.opt = torch.optim.AdamW(list(self.disc.parameters()), lr=cfg.lr, betas=(0.5, 0.999))
        self.features = None
        if cfg.perceptual_weight > 0 and cfg.perceptual_net:
            from .weights import load_model

            try:
                segmenter = load_model(cfg.perceptual_net, role="segment", device=device).net
            except ValueError as exc:
                raise ValueError(f"--perceptual_net {cfg.perceptual_net}: {exc} (train a segmenter first, or "
                                 f"pass --perceptual_weight 0)") from None
            self.features = SegmenterFeatures(segmenter).to(device)
        self._pair: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def generator_loss(self, net: nn.Module, batch: dict, device: torch.device,
                       items: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, dict]:
        """L1 + w_ssim (1 - SSIM) + w_adv BCE(D(sr), real) + w_perc L1 of segmenter features; and the parts.
        `items`: the batch's (index, seed) pairs, which seed its input noise (`sr_input_noise`) and mask
        distractors (`sr_mask_distractors`; the critic sees the true mask)."""
        cfg = self.cfg
        hr, mask = batch["image"].to(device), batch["mask"].to(device)
        sr = sr_forward(net, noisy_input(downsample(hr, self.scale), items, cfg.input_noise),
                        distracted_masks(mask, items, cfg.sr_mask_distractors))
        parts = {"l1": F.l1_loss(sr, hr)}
        if cfg.ssim_weight > 0:
            parts["ssim"] = 1 - ssim(sr, hr)
        if cfg.adversarial_weight > 0:
            logits = self.disc(sr, mask)
            parts["adversarial"] = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        if self.features is not None:
            with torch.no_grad():
                target = self.features(hr)
            parts["perceptual"] = sum(F.l1_loss(a, b) for a, b in zip(self.features(sr), target))
        weights = {"l1": 1.0, "ssim": cfg.ssim_weight, "adversarial": cfg.adversarial_weight,
                   "perceptual": cfg.perceptual_weight}
        self._pair = (hr, sr.detach(), mask)
        return sum(weights[k] * v for k, v in parts.items()), {k: float(v.detach()) for k, v in parts.items()}

    def discriminator_step(self) -> float | None:
        """One critic update on the last batch (real vs. the SR output); its BCE, or None without the term."""
        if self.cfg.adversarial_weight <= 0 or self._pair is None:
            return None
        hr, sr, mask = self._pair
        self.disc.requires_grad_(True)
        real, fake = self.disc(hr, mask), self.disc(sr, mask)
        loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))) / 2
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.disc.requires_grad_(False)  # the generator's adversarial term must not train the critic
        self._pair = None
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "disc_optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """The critic and its optimiser from a checkpoint; a critic of an earlier design starts afresh."""
        ours = self.disc.state_dict()
        if {k: v.shape for k, v in state["disc"].items()} != {k: v.shape for k, v in ours.items()}:
            log.warning("the checkpoint's critic is of an earlier design (without the texture input): a new one starts")
            return
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["disc_optimizer"])


__all__ = ["bicubic", "choose_sr", "distracted_masks", "fits", "PatchDiscriminator", "SRObjective", "SegmenterFeatures", "downsample", "noisy_input", "psnr", "shipped_path", "sr_forward",
           "ssim", "upscale"]
