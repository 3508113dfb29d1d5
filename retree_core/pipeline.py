"""Generation: vessel tree -> fundus photograph, for every caller.

`FundusPipeline` is what the command line, the app, its API, synthesis and evaluation use: masks in,
the concat or SPADE model, then super-resolution (if any) and the camera's round aperture, finished
images out; `.stream()` yields a `Frame` per sampler step for the app's live view. Below it,
`generate` samples one network and `stream` runs it in a worker thread (closing the stream ends
sampling at the next step); `dream_trees` and `tree_masks` are stage 1 (vessel trees).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch

from . import __version__, compute, precision
from . import aperture as camera  # the round aperture that finishes photographs
from .config import DEFAULT_GUIDANCE, STYLE_ANY, SampleConfig
from .data import mask_at
from .data.procedural import TreeParams, procedural_tree
from .diffusion import NoiseSchedule
from . import plausibility as plaus  # the filter's threshold is read when used (tests lower it)
from .images import mask_to_tensor, to_uint8
from .samplers import Callback, Step, StopSampling, get_sampler, guided, make_generators, randn
from .grain import GrainProfile, add_grain
from .superres import choose_sr, fits, upscale
from .tree_ops import cut_tree
from .tree_sr import upscale_trees
from .twigs import SPACING_PX as TWIG_SPACING_PX, add_twigs
from .weights import LoadedModel, load_model

MaskSource = Union[np.ndarray, Callable[[int], np.ndarray]]  # masks, or a function giving them at a size


@dataclass
class Frame:
    """One update of a running generation (uint8 images, first sample of the batch for x_t / x0)."""

    step: int  # 1-based; equals total on the final frame
    total: int
    x_t: np.ndarray | None
    x0: np.ndarray
    final: bool = False
    images: np.ndarray | None = None  # (B, H, W, 3) on the final frame
    masks: np.ndarray | None = None  # FundusPipeline.stream: the masks at the output size, cut to the aperture


@compute.on_compute_thread
@torch.inference_mode()
def generate(model: LoadedModel, masks: np.ndarray | None = None, seeds: Sequence[int] = (0,), *,
             sampler: str = SampleConfig.sampler, steps: int = SampleConfig.steps,
             guidance: float = DEFAULT_GUIDANCE, style: str = STYLE_ANY,
             callback: Callback | None = None) -> torch.Tensor:
    """Sample one image per seed, in [-1, 1], (B, C, H, W). `masks` (B, H, W) bool, at the model's size,
    conditions concat/spade models; the vessel model takes none; `style` is one of the model's styles.
    Options are checked by SampleConfig."""
    cfg = model.net_cfg
    schedule = NoiseSchedule(model.diffusion_cfg)
    SampleConfig(sampler, steps, guidance, style=style).for_model(schedule.timesteps, guidance)
    device = next(model.net.parameters()).device
    style_ids = style_tensor(cfg, style, len(seeds), device)
    cond = None
    if cfg.conditional:
        if masks is None:
            raise ValueError(f"the {cfg.role} model needs a vessel mask")
        masks = np.asarray(masks, dtype=bool)
        masks = masks[None] if masks.ndim == 2 else masks
        if masks.shape[1:] != (cfg.image_size, cfg.image_size):
            raise ValueError(f"masks are {masks.shape[1]}x{masks.shape[2]} px; this model needs "
                             f"{cfg.image_size}x{cfg.image_size} (use data.prepare_mask)")
        if len(masks) == 1 and len(seeds) > 1:
            masks = np.repeat(masks, len(seeds), axis=0)
        if len(masks) != len(seeds):
            raise ValueError(f"{len(masks)} masks for {len(seeds)} seeds")
        cond = mask_to_tensor(masks).to(device)
    gens = make_generators(seeds)
    x = randn((len(seeds), cfg.image_channels, cfg.image_size, cfg.image_size), gens, device)
    eps_fn = schedule.eps_fn(guided(model.net, cond, guidance if cfg.conditional else 1.0, style_ids))
    with precision.autocast(model.precision, device):  # the network only: the sampler's arithmetic stays fp32
        return get_sampler(sampler)(eps_fn, x, schedule, steps, generators=gens, callback=callback)


def style_tensor(cfg, style: str, batch: int, device) -> torch.Tensor | None:
    """The network's style input for a batch (None for "any", the unconditional path every model has)."""
    index = cfg.style_index(style)
    return None if index == 0 else torch.full((batch,), index, dtype=torch.long, device=device)


def vessel_masks(images: torch.Tensor, size_px: int | None = None, refine: bool = True,
                 tree_sr: LoadedModel | None = None) -> np.ndarray:
    """Binary trees from the vessel model's output (B, 1, H, W) in [-1, 1], cut at 0 (at another `size_px`
    from the soft output resized first); `refine`: breaks mended and specks dropped (`tree_ops.cut_tree`).
    With a `tree_sr` model, trees larger than the output are that model's (`tree_sr.upscale_trees`, at its
    factor, resized to `size_px` if that differs)."""
    if tree_sr is not None and size_px is not None and size_px > images.shape[-1]:
        trees = upscale_trees(tree_sr, images)
        return trees if trees.shape[-1] == size_px else np.stack([mask_at(t, size_px) for t in trees])
    return np.stack([cut_tree(soft, size_px, refine) for soft in images[:, 0].float().cpu().numpy()])


REDRAW_SEED_STRIDE = 1_000_003
TREE_TRIES = 16  # draws per tree; how often the shipped model's trees pass is in the card's stage-1 figures


def dream_trees(model: LoadedModel, seeds: Sequence[int], *, min_plausibility: float = 0.0,
                max_tries: int = TREE_TRIES, on_draw: Callable[[int, int], None] | None = None,
                size_px: int | None = None, **options) -> tuple[list[np.ndarray | None], list[int]]:
    """Stage 1: one vessel tree per seed from the vessel model. Trees scoring below `min_plausibility`
    (see plausibility.py; the paper kept trees a discriminator scored above 0.8) are redrawn with
    new seeds, up to `max_tries` draws in all; `on_draw(draw, max_tries)` is called before each round
    (draw counts from 1). Returns the trees (at `size_px` from the soft output, `vessel_masks` with the
    model's `tree_sr`; judged at the model's size), None for those that never passed, and the seeds that
    made them (for a None, its last draw's)."""
    if model.net_cfg.role != "vessel":
        raise ValueError(f"dreaming trees needs a vessel model, not a {model.net_cfg.role!r} one")
    if max_tries < 1:
        raise ValueError(f"max_tries must be at least 1, not {max_tries}")
    first = list(seeds)
    seeds = list(seeds)
    trees: list[np.ndarray | None] = [None] * len(seeds)
    for attempt in range(max_tries):
        todo = [i for i, t in enumerate(trees) if t is None]
        if not todo:
            break
        if on_draw is not None:
            on_draw(attempt + 1, max_tries)
        for i in todo:  # redraws use seeds far from the caller's, so they do not repeat other trees
            seeds[i] = first[i] + REDRAW_SEED_STRIDE * attempt
        raw = generate(model, None, [seeds[i] for i in todo], **options)
        passed = [j for j, tree in enumerate(vessel_masks(raw)) if tree.any() and (
            min_plausibility <= 0 or plaus.plausibility(tree).value >= min_plausibility)]
        if passed:  # only the kept trees are made at the output size (a treesr model's work)
            for j, out in zip(passed, vessel_masks(raw[passed], size_px, tree_sr=model.tree_sr)):
                trees[todo[j]] = out
    return trees, seeds


def varied_tree_params(seed: int, index: int) -> TreeParams:
    """Procedural knobs drawn per pair, so a synthetic dataset is not one tree shape repeated."""
    rng = np.random.default_rng([seed, index])
    return TreeParams(main_vessels=int(rng.integers(3, 6)), nasal_vessels=int(rng.integers(1, 4)),
                      macular_vessels=int(rng.integers(1, 4)), depth=int(rng.integers(4, 7)),
                      tortuosity=float(rng.uniform(0.2, 0.8)), width_px=float(rng.uniform(6.5, 10.0)),
                      eye=("left", "right")[int(rng.integers(2))])


def tree_masks(vessel_model: LoadedModel | None, seeds: list[int], size_px: int, *, trees: str = "vessel",
               first_seed: int = 0, min_plausibility: float | None = None, max_tries: int = TREE_TRIES,
               twigs: bool = False, twig_spacing: float = TWIG_SPACING_PX, **options) -> tuple[np.ndarray, int]:
    """Stage 1 for a batch of seeds: trees from the vessel model, redrawn below the plausibility
    threshold (default plausibility.DEFAULT_THRESHOLD; `dream_trees`), with `twigs` the thin vessels it
    cannot draw grown onto them (twigs.add_twigs, seeded per tree, one per `twig_spacing` px of centre line
    at 512), or procedural ones (knobs varied per pair). Returns the masks at size_px and how many
    procedural trees stood in for stage-1 trees that stayed implausible."""
    def procedural(seed: int) -> np.ndarray:
        return procedural_tree(size_px, varied_tree_params(first_seed, seed - first_seed), seed)

    if vessel_model is None or trees == "procedural":
        return np.stack([procedural(seed) for seed in seeds]), 0
    threshold = plaus.DEFAULT_THRESHOLD if min_plausibility is None else min_plausibility
    dreamt, _ = dream_trees(vessel_model, seeds, min_plausibility=threshold, max_tries=max_tries, size_px=size_px,
                            **options)
    masks = [procedural(seed) if tree is None else add_twigs(tree, seed, twig_spacing) if twigs else tree
             for tree, seed in zip(dreamt, seeds)]
    return np.stack(masks), sum(tree is None for tree in dreamt)


def stream(model: LoadedModel, masks: np.ndarray | None = None, seeds: Sequence[int] = (0,),
           **options) -> Iterator[Frame]:
    """`generate` as a stream of frames; the last frame carries the finished images. Closing the
    iterator early stops the sampler at its next step. Not to be consumed on the compute thread."""
    frames: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()
    total = [0]

    def on_step(s: Step) -> None:
        if stop.is_set():
            raise StopSampling
        total[0] = s.total
        frames.put(Frame(s.index + 1, s.total, to_uint8(s.x[0].clamp(-1, 1)), to_uint8(s.x0[0])))

    def work() -> None:
        try:
            out = generate(model, masks, seeds, callback=on_step, **options)
            images = to_uint8(out)
            frames.put(Frame(total[0], total[0], None, images[0], True, images))
        except StopSampling:
            pass
        except Exception as exc:  # handed to the consumer, raised in its thread
            frames.put(exc)
        finally:
            frames.put(done)

    worker = compute.start(work)  # the app's compute thread (may wait for another run there), or a new one
    try:
        while (item := frames.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        if not worker.cancel():  # still queued: never runs
            while not worker.done():  # unblock a worker waiting on a full queue
                try:
                    frames.get(timeout=0.05)
                except queue.Empty:
                    pass


def masks_at(masks: MaskSource, size_px: int) -> np.ndarray:
    """(B, size_px, size_px) bool masks from a source: a function of the size (a file read at that size),
    or masks, resized (data.mask_at) unless they are that size already."""
    if callable(masks):
        out = np.asarray(masks(size_px), dtype=bool)
        return out[None] if out.ndim == 2 else out
    out = np.asarray(masks, dtype=bool)
    out = out[None] if out.ndim == 2 else out
    return np.stack([mask_at(m, size_px) for m in out])


@dataclass
class FundusPipeline:
    """Vessel masks in, fundus photographs out: the concat or SPADE model at its size, then the
    super-resolution model (when given; conditioned on the masks at its output size), then the camera grain
    the sr model lacks (when asked; grain.py), then the camera's round aperture (when asked; the masks cut to
    it). Image i of a call uses seed options.seed + i."""

    model: LoadedModel
    sr: LoadedModel | None = None
    aperture: bool = True
    grain: bool = False

    def __post_init__(self) -> None:
        if not self.model.net_cfg.conditional:
            raise ValueError(f"{self.model.source}: a {self.model.net_cfg.role!r} model draws vessel trees; "
                             "fundus images need a concat or spade model")
        if self.sr is not None and not fits(self.sr, self.size_px):
            raise ValueError(f"the super-resolution model takes {self.sr.net_cfg.sr_input_px} px images; "
                             f"the image model makes {self.size_px} px ones")
        if self.grain and self.sr is None:
            raise ValueError("camera grain is what super-resolution lacks, and this pipeline has no sr model")
        if self.grain and not self.sr.grain:
            raise ValueError(f"{Path(self.sr.source).name}: no camera grain measured for this super-resolution "
                             "model (bench/grain.py measures it)")

    @classmethod
    def load(cls, generator: str = "concat", *, role: str | None = None, sr: str | None = "auto",
             aperture: bool = True, grain: bool = False, device: str = "cpu",
             precision: str = "fp32") -> "FundusPipeline":
        """From model files: `generator` a shipped name or a path; `sr` auto (the shipped sr model when it
        fits), none, or a name or path (superres.choose_sr)."""
        model = load_model(generator, role=role, device=device, precision=precision)
        if not model.net_cfg.conditional:
            return cls(model)  # refused, with the model named
        return cls(model, choose_sr(sr, model.net_cfg.image_size, device), aperture, grain)

    def grain_profile(self, style: str) -> GrainProfile:
        """The sr model's grain for a style: the style's own where measured, else its "any" profile."""
        profiles = self.sr.grain if self.sr is not None else {}
        profile = profiles.get(style) or profiles.get(STYLE_ANY)
        if profile is None:
            raise ValueError(f"no camera grain measured for the style {style!r} or {STYLE_ANY!r}")
        return profile

    @property
    def size_px(self) -> int:
        """The generator's image size."""
        return self.model.net_cfg.image_size

    @property
    def output_px(self) -> int:
        """The finished images' size: the super-resolution model's output, else the generator's."""
        return self.sr.net_cfg.image_size if self.sr is not None else self.size_px

    def options(self, options: SampleConfig | None = None) -> SampleConfig:
        """The options this pipeline samples with: guidance None becomes the model's recommended scale for
        the style; the style must be one of the model's."""
        options = options or SampleConfig()
        options = options.for_model(self.model.diffusion_cfg.timesteps, self.model.guidance_for(options.style))
        self.model.net_cfg.style_index(options.style)
        return options

    @property
    def styles(self) -> tuple[str, ...]:
        """The styles a user can ask of this pipeline: "any", then the model's dataset styles."""
        return (STYLE_ANY,) + self.model.net_cfg.styles

    def settings(self, options: SampleConfig | None = None) -> dict:
        """What makes this pipeline's images, as data: stored with generated images (images.save_png)."""
        name = lambda m: Path(m.source).stem if m is not None else None  # noqa: E731  (names, not server paths)
        return {"retree": __version__, "model": name(self.model), "role": self.model.net_cfg.role,
                "image_size_px": self.size_px, "output_px": self.output_px, "sr": name(self.sr),
                "aperture": self.aperture, "grain": self.grain, "precision": self.model.precision,
                **asdict(self.options(options))}

    def finish(self, images: np.ndarray, masks: MaskSource,
               options: SampleConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The generator's uint8 images (B, H, W, 3) or (H, W, 3) -> (finished images, masks at the
        output size cut to the aperture), each of the same batch shape as `images`; `options` give the
        grain its style and seeds."""
        single = np.asarray(images).ndim == 3
        full = masks_at(masks, self.output_px)
        images = np.asarray(images)[None] if single else np.asarray(images)
        if self.sr is not None:
            images = upscale(self.sr, images, full)
        if self.grain:
            options = options or SampleConfig()
            nyquist = 0.5 / self.sr.net_cfg.sr_scale  # the generator's, in cycles per output pixel
            images = add_grain(images, self.grain_profile(options.style), nyquist, options.seed)
        if self.aperture:
            images, full = camera.apply_aperture(images, full)
        return (images[0], full[0]) if single else (images, full)

    def field_of_view(self, finished: np.ndarray) -> np.ndarray | None:
        """The bool fields of view of finished images (the aperture's lit disc, rim included), for a pair's
        FOV mask; None without the aperture (a loader then estimates one)."""
        return camera.field_of_view(np.asarray(finished)) if self.aperture else None

    def __call__(self, masks: MaskSource, options: SampleConfig | None = None,
                 callback: Callback | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Finished images (B, H, W, 3) uint8 and their masks (B, H, W) bool for masks at any size."""
        options = self.options(options)
        small = masks_at(masks, self.size_px)
        seeds = [options.seed + i for i in range(len(small))]
        raw = to_uint8(generate(self.model, small, seeds, sampler=options.sampler, steps=options.steps,
                                guidance=options.guidance, style=options.style, callback=callback))
        return self.finish(raw, masks, options)

    def stream(self, masks: MaskSource, options: SampleConfig | None = None) -> Iterator[Frame]:
        """`stream` for the first mask: a frame per sampler step; the final frame's `images` and `masks`
        are finished (super-resolved, aperture). Closing the iterator stops the sampler."""
        options = self.options(options)
        small = masks_at(masks, self.size_px)[:1]
        frames = stream(self.model, small, [options.seed], sampler=options.sampler, steps=options.steps,
                        guidance=options.guidance, style=options.style)
        try:
            for frame in frames:
                if frame.final:
                    frame.images, frame.masks = self.finish(frame.images, masks_at(masks, self.output_px)[:1], options)
                yield frame
        finally:
            frames.close()
