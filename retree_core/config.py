"""Configuration as data: network presets, diffusion settings and training options.

Every checkpoint and every shipped weight file carries these dataclasses as JSON, so a model can be
rebuilt from its file alone.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

# segment: the vessel segmenter; sr: the mask-conditioned super-resolution model (neither is a diffusion model)
ROLES = ("vessel", "concat", "spade", "segment", "sr")


@dataclass
class NetConfig:
    """Shape of the ReTree denoiser (a UNet with locality self-attention at coarse resolutions).

    `patch_px` > 1 folds patch_px x patch_px pixels into channels before the first block (space-to-depth),
    so a 256 px image is denoised at 128 px internal resolution; this is what makes `lean` fast on a CPU.
    """

    role: str = "concat"
    image_size: int = 256
    patch_px: int = 1
    channels: tuple[int, ...] = (64, 128, 256, 256)  # width per resolution level; len-1 down-samplings
    bottleneck_channels: int = 512
    attn_max_px: int = 32  # ViT/LSA blocks at every level whose feature map is at most this wide
    attn_heads: int = 4
    attn_depth: int = 1  # transformer blocks per attention site
    emb_dim: int = 256
    groups: int = 8  # GroupNorm groups (reduced automatically where a width is not divisible)
    spade_hidden: int = 64  # width of the conv net predicting SPADE gamma/beta
    spade_encoder: bool = False  # SPADE also in the encoder (the decoder always has it for role=spade)
    # eps = c(t) x_t + net(x_t): the best linear estimate of the noise as a skip (see nets/unet.py), so the
    # network learns only the residual; off for files saved before it existed.
    input_skip: bool = False
    sr_scale: int = 4  # role sr: image_size is the output size, the input is image_size / sr_scale

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        levels = len(self.channels)
        if levels < 2:
            raise ValueError("channels needs at least two levels")
        if self.image_size % self.stride:
            raise ValueError(f"image_size {self.image_size} must be divisible by {self.stride} "
                             f"(patch_px x 2^(levels-1)) for this network")
        if self.role == "sr" and (self.sr_scale < 1 or self.image_size % self.sr_scale):
            raise ValueError(f"sr_scale {self.sr_scale} must be a whole divisor of image_size {self.image_size}")

    @property
    def stride(self) -> int:
        """Pixels per feature at the coarsest level: input sizes must be multiples of it."""
        return self.patch_px * 2 ** (len(self.channels) - 1)

    @property
    def sr_input_px(self) -> int:
        """Role sr: the size of the images it upscales (image_size / sr_scale)."""
        return self.image_size // self.sr_scale

    def level_px(self, level: int) -> int:
        """Width in pixels of the feature maps at a resolution level (0 = after the patch fold)."""
        return self.image_size // self.patch_px // 2 ** level

    def has_attention(self, level: int) -> bool:
        return self.level_px(level) <= self.attn_max_px

    @property
    def image_channels(self) -> int:
        """Channels the network outputs: 1 for a vessel tree (or the segmenter's vessel logits), 3 for a
        fundus photograph."""
        return 1 if self.role in ("vessel", "segment") else 3

    @property
    def input_channels(self) -> int:
        """Channels the network reads: the noisy image (plus the mask for concat), the segmenter's photograph,
        or for sr the upsampled photograph plus the full-resolution mask."""
        return {"vessel": 1, "concat": 4, "spade": 3, "segment": 3, "sr": 4}[self.role]

    @property
    def conditional(self) -> bool:
        """Whether the network is a diffusion model conditioned on a vessel mask."""
        return self.role in ("concat", "spade")


PRESETS: dict[str, dict[str, Any]] = {
    # The original ReTree widths (64-128-256-256, 512-wide bottleneck); at the paper's 64 px the
    # attention sits at 32, 16 and 8 px as in the original.
    "paper": dict(patch_px=1, channels=(64, 128, 256, 256), bottleneck_channels=512,
                  attn_max_px=32, attn_heads=4, emb_dim=256, input_skip=True),
    # Sized for a 2-core CPU: 256 px images denoised at 128 px internally, attention only at 16 px.
    "lean": dict(patch_px=2, channels=(32, 64, 128, 192), bottleneck_channels=192,
                 attn_max_px=16, attn_heads=4, emb_dim=128, spade_hidden=32, input_skip=True),
    # Full resolution and narrow (no patch fold, no attention at training sizes): for the vessel
    # segmenter, whose one-pixel vessels a 2x fold would blur.
    "fine": dict(patch_px=1, channels=(16, 32, 64, 128), bottleneck_channels=128,
                 attn_max_px=16, attn_heads=4, emb_dim=64, groups=8, spade_hidden=16, input_skip=True),
    # Light and folded 2x: for the super-resolution model, whose output is the bicubic image plus a residual.
    "light": dict(patch_px=2, channels=(32, 64, 96), bottleneck_channels=96, attn_max_px=16, attn_heads=4,
                  emb_dim=64, groups=8, spade_hidden=16, input_skip=True),
    # For tests: small enough to train in seconds.
    "tiny": dict(patch_px=1, channels=(16, 32), bottleneck_channels=32, attn_max_px=32,
                 attn_heads=2, emb_dim=32, groups=4, spade_hidden=16, input_skip=True),
}


def net_config(preset: str, role: str, image_size: int, **overrides: Any) -> NetConfig:
    """A NetConfig from a named preset, for one role and image size."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if role in ("segment", "sr"):  # not denoisers: no noise-estimate skip
        overrides = {"input_skip": False, **overrides}
    return NetConfig(role=role, image_size=image_size, **{**PRESETS[preset], **overrides})


@dataclass
class DiffusionConfig:
    """Forward process and loss. The paper: linear betas 1e-4..0.02, T=1000, L1 + MSE on the noise."""

    schedule: str = "linear"  # linear | cosine
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    p_uncond: float = 0.1  # probability of dropping the mask (classifier-free guidance training)
    # what the network predicts: eps (the noise, the paper's) or v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans &
    # Ho 2022); samplers always receive eps, converted in NoiseSchedule.eps_fn
    prediction: str = "eps"
    loss_weighting: str = "uniform"  # uniform | min_snr: min(SNR, gamma) per item (Hang et al. 2023)
    min_snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"unknown loss_weighting {self.loss_weighting!r}; expected one of "
                             f"{', '.join(LOSS_WEIGHTINGS)}")


PREDICTIONS = ("eps", "v")
LOSS_WEIGHTINGS = ("uniform", "min_snr")


SAMPLER_LABELS = {"dpmpp": "DPM-Solver++ (2M)", "ddim": "DDIM", "ddpm": "DDPM (ancestral)"}  # samplers.py
MAX_GUIDANCE = 20.0  # the largest classifier-free guidance scale accepted anywhere
DEFAULT_GUIDANCE = 1.0  # the plain conditional model: the scale of a file that recommends none
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class SampleConfig:
    """How one generation samples: the one carrier of sampler, steps, guidance and seed for the command
    line, the app, the API and evaluation, checked when made. Image i of a call uses seed + i.
    `guidance` None is the model's recommended scale, filled in by `for_model`."""

    sampler: str = "dpmpp"
    steps: int = 20
    guidance: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLER_LABELS:
            raise ValueError(f"unknown sampler {self.sampler!r}; expected one of {', '.join(SAMPLER_LABELS)}")
        if not _whole(self.steps):  # its range is the model's noise schedule (for_model)
            raise ValueError(f"steps must be a whole number, got {self.steps!r}")
        g = self.guidance
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float))
                              or not math.isfinite(g) or not 0 <= g <= MAX_GUIDANCE):
            raise ValueError(f"guidance must be between 0 and {MAX_GUIDANCE:g}, got {g!r}")
        if not _whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}")

    def for_model(self, timesteps: int, recommended: float) -> "SampleConfig":
        """These options for one model: its recommended guidance when none was given, steps within its
        noise schedule."""
        if not 1 <= self.steps <= timesteps:
            raise ValueError(f"steps must be a whole number from 1 to {timesteps}, got {self.steps!r}")
        return dataclasses.replace(self, guidance=float(recommended if self.guidance is None else self.guidance))


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class TrainConfig:
    """Options of one training run (the command line maps onto these one to one)."""

    mode: str = "concat"
    preset: str = "lean"
    data_root: list[str] | None = None
    image_size: int = 256
    crop_px: int | None = None  # patch training: random crop_px squares of the image_size view
    synthetic_root: list[str] | None = None  # synthetic pairs (generate / Synthesise output) mixed in
    synthetic_fraction: float = 0.5  # share of training items drawn from synthetic_root (1: synthetic only)
    procedural_fraction: float = 0.0  # vessel mode: share of training trees drawn from the procedural generator
    soft_tree_px: float = 0.0  # vessel mode: learn tanh(signed distance to the vessel edge / this); 0: the mask
    # super-resolution (mode sr): input image_size / sr_scale; loss L1 + SSIM + adversarial (BCE) + perceptual
    sr_scale: int = 4
    ssim_weight: float = 1.0
    adversarial_weight: float = 0.01
    perceptual_weight: float = 0.1
    perceptual_net: str | None = "segment"  # features of this segmenter (weights name/path); None: no term
    sr_input_noise: float = 0.1  # conditioning augmentation: input noise std up to this ([-1, 1] units)
    batch_size: int = 4  # per process
    grad_accum: int = 1
    epochs: int = 500
    max_steps: int | None = None
    max_minutes: float | None = None  # wall-clock budget of this invocation: checkpoint and stop when spent
    lr: float = 3e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    noise_steps: int = 1000
    emb_dim: int | None = None  # overrides the preset's embedding width
    schedule: str = "linear"
    p_uncond: float = 0.1
    prediction: str = "eps"  # eps | v (DiffusionConfig)
    loss_weighting: str = "uniform"  # uniform | min_snr
    min_snr_gamma: float = 5.0
    l1_weight: float = 1.0  # the loss: l1_weight * L1 + mse_weight * MSE on the prediction
    mse_weight: float = 1.0
    sample_interval: int = 500
    checkpoint_interval: int = 250
    sample_steps: int = 20  # sampler steps for the sample grid (DPM-Solver++)
    output_dir: str = "runs/retree"
    device: str = "cpu"
    seed: int = 0
    num_workers: int = 0
    augment: bool = True
    color_jitter: float = 0.1  # augmentation strengths (data.AugmentConfig); the extras below are off by default
    # and, with synthetic_root, apply to the synthetic pairs only
    vessel_fade: float = 0.0  # up to this share of the annotated vessels' contrast blended away (segmenters)
    blur_sigma: float = 0.0  # Gaussian blur up to this sigma (px of a 512 px view)
    noise_std: float = 0.0  # Gaussian noise up to this std (grey levels)
    vessel_reflex: float = 0.0  # a light stripe along wide vessels' centre lines, up to this share of their contrast
    illumination: float = 0.0  # smooth brightness field, log-gain std up to this
    fov_margin_px: int = 0  # segment: the loss also covers this band (px of the view) beyond the FOV
    precision: str = "auto"  # auto | fp32 | bf16: bf16 autocast where the device runs it natively (precision.py)
    resume: bool = False
    init_weights: str | None = None  # start a new run from a model file's weights (e.g. weights/concat)
    progress: bool = True

    def net(self) -> NetConfig:
        extra = {} if self.emb_dim is None else {"emb_dim": self.emb_dim}
        if self.mode == "sr":
            extra["sr_scale"] = self.sr_scale
        return net_config(self.preset, self.mode if self.mode in ROLES else "concat",
                          self.image_size, **extra)

    def diffusion(self) -> DiffusionConfig:
        return DiffusionConfig(schedule=self.schedule, timesteps=self.noise_steps, p_uncond=self.p_uncond,
                               prediction=self.prediction, loss_weighting=self.loss_weighting,
                               min_snr_gamma=self.min_snr_gamma, l1_weight=self.l1_weight, mse_weight=self.mse_weight)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


RETIRED_FIELDS = {"bf16"}  # fields of older files, ignored when read (bf16 became TrainConfig.precision)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a dataclass from a dict, rejecting unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in data.items() if k not in RETIRED_FIELDS - names}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**data)


__all__ = ["ROLES", "NetConfig", "PRESETS", "net_config", "DiffusionConfig", "SampleConfig", "SAMPLER_LABELS",
           "MAX_GUIDANCE", "DEFAULT_GUIDANCE", "MAX_SEED", "TrainConfig", "to_dict", "from_dict"]
