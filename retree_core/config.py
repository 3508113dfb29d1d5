"""Configuration as data: network presets, diffusion settings and training options.

Every checkpoint and every shipped weight file carries these dataclasses as JSON, so a model can be
rebuilt from its file alone.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from .checks import ConfigError, _whole, bounded_number, whole_number  # noqa: F401  (re-exported)

STYLE_ANY = "any"  # the style of a model trained without styles, and every style model's unconditional path
# segment: the vessel segmenter; sr: the mask-conditioned super-resolution model; treesr: stage 1's super-resolution
# (the vessel model's soft tree in, a tree at sr_scale x its size out); these three are not diffusion models
ROLES = ("vessel", "concat", "spade", "segment", "sr", "treesr")
DENOISERS = ("vessel", "concat", "spade")  # the diffusion models: their files' noise schedule matters


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
    sr_scale: int = 4  # roles sr, treesr: image_size is the output size, the input is image_size / sr_scale
    # concat/spade: dataset styles the network is conditioned on (style i is index i + 1; 0 is "any", the
    # unconditional path); empty for files trained without them
    styles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.channels, self.styles = tuple(self.channels), tuple(self.styles)
        if self.styles and (not self.conditional or STYLE_ANY in self.styles or len(set(self.styles)) < len(self.styles)):
            raise ConfigError(f"styles {list(self.styles)}: only concat and spade models take styles, named once "
                             f"each and none {STYLE_ANY!r}")
        if self.role not in ROLES:
            raise ConfigError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        levels = len(self.channels)
        if levels < 2:
            raise ConfigError("channels needs at least two levels")
        if self.image_size % self.stride:
            raise ConfigError(f"image_size {self.image_size} must be divisible by {self.stride} "
                             f"(patch_px x 2^(levels-1)) for this network")
        if self.role in ("sr", "treesr") and (self.sr_scale < 1 or self.image_size % self.sr_scale):
            raise ConfigError(f"sr_scale {self.sr_scale} must be a whole divisor of image_size {self.image_size}")

    def style_index(self, style: str) -> int:
        """The embedding index of a style name ("any": 0), or a ConfigError naming the model's styles."""
        if style == STYLE_ANY:
            return 0
        if style not in self.styles:
            offered = ", ".join((STYLE_ANY,) + self.styles)
            raise ConfigError(f"style {style!r} is not one this model knows; it offers: {offered}")
        return self.styles.index(style) + 1

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
    def attention_tokens(self) -> int:
        """Positions of the largest feature map with attention (0: none), what attention's memory grows with."""
        sides = [self.level_px(level) for level in range(len(self.channels)) if self.has_attention(level)]
        return max(sides, default=0) ** 2

    @property
    def image_channels(self) -> int:
        """Channels the network outputs: 1 for a vessel tree (or vessel logits: segment, treesr), 3 for a
        fundus photograph."""
        return 1 if self.role in ("vessel", "segment", "treesr") else 3

    @property
    def input_channels(self) -> int:
        """Channels the network reads: the noisy image (plus the mask for concat), the segmenter's photograph,
        for sr the upsampled photograph plus the full-resolution mask, for treesr the upsampled soft tree."""
        return {"vessel": 1, "concat": 4, "spade": 3, "segment": 3, "sr": 4, "treesr": 1}[self.role]

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
        raise ConfigError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if role not in DENOISERS:  # no noise-estimate skip
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
            raise ConfigError(f"unknown prediction {self.prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"unknown loss_weighting {self.loss_weighting!r}; expected one of "
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
    style: str = STYLE_ANY  # a dataset style of the model (NetConfig.styles), checked by the model

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLER_LABELS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; expected one of {', '.join(SAMPLER_LABELS)}")
        if not _whole(self.steps):  # its range is the model's noise schedule (for_model)
            raise ConfigError(f"steps must be a whole number, got {self.steps!r}")
        g = self.guidance
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float))
                              or not math.isfinite(g) or not 0 <= g <= MAX_GUIDANCE):
            raise ConfigError(f"guidance must be between 0 and {MAX_GUIDANCE:g}, got {g!r}")
        if not _whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}")
        if not isinstance(self.style, str) or not self.style:
            raise ConfigError(f"style must be a style's name, got {self.style!r}")

    def for_model(self, timesteps: int, recommended: float) -> "SampleConfig":
        """These options for one model: its recommended guidance when none was given, steps within its
        noise schedule."""
        if not 1 <= self.steps <= timesteps:
            raise ConfigError(f"steps must be a whole number from 1 to {timesteps}, got {self.steps!r}")
        return dataclasses.replace(self, guidance=float(recommended if self.guidance is None else self.guidance))


def option(default: Any, help: str = "", *, low: float | None = None, high: float | None = None,
           above: float | None = None, choices: Sequence[str] | None = None, nargs: str | None = None,
           flag: str | None = None, metavar: str | None = None, kind: str | None = None, cli: bool = True) -> Any:
    """A TrainConfig field and how the command line offers it (cli.py builds `train`'s options from these):
    bounds `low`..`high` (`above`: an open lower bound), `choices`, `nargs`, `flag` (a bool's switch, e.g.
    --no_augment), `kind` ("device"). Every option is defined here, once."""
    meta = dict(help=help, low=low, high=high, above=above, choices=choices, nargs=nargs, flag=flag,
                metavar=metavar, kind=kind, cli=cli)
    return field(default=default, metadata=meta)


MAX_IMAGE_PX = 4096  # largest image size a run or a model file may declare
MAX_TIMESTEPS = 100_000  # largest noise schedule a run or a model file may declare
MAX_ATTENTION_TOKENS = 64 * 64  # largest feature map an attention block may see (its cost grows with the square)
PRECISIONS = ("auto", "fp32", "bf16")  # precision.py
PRECISION_HELP = ("bf16 autocast of the network (weights, optimiser and losses stay fp32); auto: bf16 where the "
                  "device runs it natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX)")
EXTRAS_NOTE = " (segmenters; with --synthetic_root, the synthetic pairs only)"
SR_INPUT_NOISE = {"sr": 0.1, "treesr": 0.3}  # each role's default --sr_input_noise: the shipped files' (model card)


@dataclass
class TrainConfig:
    """Options of one training run: `python -m retree_core train --NAME VALUE` for each field."""

    mode: str = option("concat", choices=ROLES)
    preset: str = option("lean", choices=tuple(PRESETS))
    data_root: list[str] | None = option(None, "dataset folder(s); omitted: the embedded scikit-image fundus "
                                               "photograph", nargs="+")
    image_size: int = option(128, "the size trained at (a sr or treesr model: its output size); 128 by default, "
                                  "the size the shipped sr takes to 512 px", low=8, high=MAX_IMAGE_PX)
    crop_px: int | None = option(None, "segment, sr and treesr: train on random crops of this size (patch "
                                       "training)", low=8, high=MAX_IMAGE_PX)
    synthetic_root: list[str] | None = option(None, "folder(s) of synthetic pairs (generate --num / Synthesise) "
                                                    "mixed into the training data", nargs="+")
    synthetic_fraction: float = option(0.5, "share of training items drawn from --synthetic_root (1: synthetic "
                                            "only)", low=0, high=1)
    procedural_fraction: float = option(0.0, "vessel: share of training trees drawn from the procedural "
                                             "generator (on the fly)", low=0, high=1)
    soft_tree_px: float = option(0.0, "vessel (treesr: as its input): learn a smooth tree, tanh(signed distance "
                                      "to the vessel edge / this many px), positive exactly on the vessels (sampled "
                                      "trees are its positive part as always); 0: the binary mask", low=0, high=64)
    sr_scale: int = option(4, "sr, treesr: upscaling factor (input image_size / sr_scale)", low=1, high=16)
    ssim_weight: float = option(1.0, "sr: weight of 1 - SSIM", low=0, high=100)
    adversarial_weight: float = option(0.01, "sr: weight of the discriminator's BCE", low=0, high=100)
    perceptual_weight: float = option(0.1, "sr: weight of the segmenter-feature L1", low=0, high=100)
    perceptual_net: str | None = option("segment", "sr: the segmenter whose features the perceptual term "
                                                   "compares", metavar="NAME|PATH")
    sr_input_noise: float | None = option(None, "sr and treesr: Gaussian noise of a std drawn per item up to this "
                                                "is added to the low-res input, so the model learns to clean a "
                                                "generator's grain (conditioning augmentation); default: "
                                                + ", ".join(f"{v:g} for {k}" for k, v in SR_INPUT_NOISE.items()),
                                          low=0, high=1)
    sr_mask_distractors: float = option(0.0, "sr: share of items whose mask also holds another item's vessels, "
                                             "which the photograph does not show, so the model draws a vessel "
                                             "as strongly as its input shows one", low=0, high=1)
    batch_size: int = option(4, "per process", low=1)
    grad_accum: int = option(1, low=1)
    epochs: int = option(500, low=1)
    max_steps: int | None = option(None, "overrides --epochs", low=1)
    max_minutes: float | None = option(None, "stop (with a checkpoint, resumable) after this much wall time",
                                       above=0, high=10**6)
    lr: float = option(3e-4, above=0, high=1)
    cooldown_steps: int = option(0, "the learning rate falls linearly to zero over the run's last this many "
                                    "steps (warmup-stable-decay's decay; 0: constant)", low=0)
    weight_decay: float = option(0.0, cli=False)
    ema_decay: float = option(0.999, low=0, high=1)
    grad_clip: float = option(1.0, cli=False)
    noise_steps: int = option(1000, low=1, high=MAX_TIMESTEPS)
    emb_dim: int | None = option(None, "overrides the preset's", low=1, high=4096)
    schedule: str = option("linear", choices=("linear", "cosine"))
    p_uncond: float = option(0.1, "mask dropout for guidance (and style dropout to 'any')", low=0, high=1)
    style_condition: bool = option(False, "concat/spade: condition on each data root's style (its folder name), "
                                          "dropped to 'any' as the mask is", flag="--style_condition")
    # the recipe: v prediction with min-SNR-5 weighting and MSE won the equal-compute study (weights/README.md,
    # "Recipe"); --prediction eps --loss_weighting uniform --l1_weight 1 is the paper's, which the shipped files use
    prediction: str = option("v", "what the denoiser predicts: v (Salimans & Ho) or the noise (eps, the paper's)",
                             choices=PREDICTIONS)
    loss_weighting: str = option("min_snr", "per-timestep loss weights: min_snr (min-SNR-gamma, Hang et al. 2023) "
                                            "or uniform", choices=LOSS_WEIGHTINGS)
    min_snr_gamma: float = option(5.0, above=0, high=1000)
    l1_weight: float = option(0.0, "denoiser loss: L1 weight", low=0, high=100)
    mse_weight: float = option(1.0, "denoiser loss: MSE weight", low=0, high=100)
    sample_interval: int = option(500, low=1)
    checkpoint_interval: int = option(250, low=1)
    sample_steps: int = option(20, "sampler steps for the sample grid (DPM-Solver++)", cli=False)
    output_dir: str = option("runs/retree")
    device: str = option("cpu", kind="device")
    seed: int = option(0, low=0, high=MAX_SEED)
    num_workers: int = option(0, low=0, high=64)
    augment: bool = option(True, flag="--no_augment")
    color_jitter: float = option(0.1, "strength of brightness, contrast, saturation and hue changes", low=0, high=1)
    vessel_fade: float = option(0.0, "blend up to this share of the annotated vessels' contrast away, per image "
                                     "(vessels as faint as real thin ones)" + EXTRAS_NOTE, low=0, high=1)
    blur_sigma: float = option(0.0, "Gaussian blur of a sigma drawn per image up to this (pixels of a 512 px "
                                    "view)" + EXTRAS_NOTE, low=0, high=10)
    noise_std: float = option(0.0, "Gaussian noise of a std drawn per image up to this (grey levels)" + EXTRAS_NOTE,
                              low=0, high=50)
    vessel_reflex: float = option(0.0, "a light stripe along the centre of vessels 4 px wide or more (512 px view), "
                                       "up to this share of their contrast, as the light reflex of real arteries"
                                  + EXTRAS_NOTE, low=0, high=1)
    illumination: float = option(0.0, "uneven lighting: a smooth random gain field, its log of a std drawn up to "
                                      "this" + EXTRAS_NOTE, low=0, high=2)
    fov_margin_px: int = option(0, "segment: the loss also covers this band (pixels of the view) beyond the field "
                                   "of view, as background: the FOV rim is not a vessel", low=0, high=64)
    precision: str = option("auto", PRECISION_HELP, choices=PRECISIONS)
    channels_last: bool = option(False, "channels-last memory layout for the network (faster convolutions on "
                                        "GPUs with tensor cores)", flag="--channels_last")
    compile: bool = option(False, "torch.compile the network's training forward pass (GPUs; the first steps "
                                  "compile)", flag="--compile")
    resume: bool = option(False, "continue from output_dir/last.ckpt", flag="--resume")
    init_weights: str | None = option(None, "start a new run from a model's weights (a shipped name, "
                                            ".safetensors or .ckpt) with the same role, preset and size; the "
                                            "optimiser starts afresh", metavar="NAME|PATH")
    progress: bool = option(True, flag="--no_progress")

    def __post_init__(self) -> None:
        self.check()

    @property
    def input_noise(self) -> float:
        """sr and treesr: the std bound of the low-res input's noise (--sr_input_noise, else the role's default)."""
        return self.sr_input_noise if self.sr_input_noise is not None else SR_INPUT_NOISE.get(self.mode, 0.0)

    def check(self) -> None:
        """Refuse options that do not fit the run's role, each with a message naming it (also called by the
        loop: the app sets some fields after making the config)."""
        extras = (self.vessel_fade, self.blur_sigma, self.noise_std, self.vessel_reflex, self.illumination)
        if self.crop_px is not None and self.mode not in ("segment", "sr", "treesr"):
            raise ConfigError("--crop_px (patch training) is for the segmenter, sr and treesr; diffusion models "
                             "train on whole images")
        if self.mode in ("sr", "treesr") and self.crop_px is not None:
            multiple = self.sr_scale * self.net().stride
            if self.crop_px % multiple:
                raise ConfigError(f"--crop_px {self.crop_px} must be a multiple of {multiple} (sr_scale x the "
                                 "network's stride), so that the input crop is whole and fits the network")
        if self.style_condition and (self.mode not in ("concat", "spade") or self.synthetic_root):
            raise ConfigError("--style_condition is for --mode concat or spade trained on real data roots (each "
                             "root a style), without --synthetic_root")
        if self.sr_mask_distractors and self.mode != "sr":
            raise ConfigError("--sr_mask_distractors is for --mode sr")
        if self.soft_tree_px and self.mode not in ("vessel", "treesr"):
            raise ConfigError("--soft_tree_px is the vessel model's training target (and treesr's input); it is "
                              "for --mode vessel or treesr")
        if self.procedural_fraction and (self.mode != "vessel" or self.synthetic_root):
            raise ConfigError("--procedural_fraction mixes procedural trees into a vessel run's real trees; "
                             "it is for --mode vessel without --synthetic_root")
        if self.mode != "segment" and (any(x > 0 for x in extras) or self.fov_margin_px):
            raise ConfigError("--vessel_fade, --blur_sigma, --noise_std, --vessel_reflex, --illumination and "
                             "--fov_margin_px are for --mode segment: on a generator's training images they would "
                             "teach it faded, blurred, noisy or unevenly lit photographs")

    def net(self) -> NetConfig:
        extra = {} if self.emb_dim is None else {"emb_dim": self.emb_dim}
        if self.mode in ("sr", "treesr"):
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


__all__ = ["STYLE_ANY", "ROLES", "ConfigError", "NetConfig", "PRESETS", "net_config", "DiffusionConfig", "SampleConfig", "SAMPLER_LABELS",
           "MAX_GUIDANCE", "DEFAULT_GUIDANCE", "MAX_SEED", "TrainConfig", "to_dict", "from_dict", "whole_number",
           "bounded_number"]
