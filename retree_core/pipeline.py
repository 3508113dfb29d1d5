"""Generation: vessel tree -> fundus image, as a batch call or as a stream of frames.

`generate` is what the command line and evaluation call; `stream` runs the same thing in a worker
thread and yields a `Frame` per sampler step, which is what the app shows live. Closing the stream
(the app's Stop button) ends sampling at the next step.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from . import compute, precision
from .config import SampleConfig
from .diffusion import NoiseSchedule
from .images import mask_to_tensor, to_uint8
from .samplers import Callback, Step, StopSampling, get_sampler, guided, make_generators, randn
from .weights import LoadedModel


@dataclass
class Frame:
    """One update of a running generation (uint8 images, first sample of the batch for x_t / x0)."""

    step: int  # 1-based; equals total on the final frame
    total: int
    x_t: np.ndarray | None
    x0: np.ndarray
    final: bool = False
    images: np.ndarray | None = None  # (B, H, W, 3) on the final frame


def check_options(sampler: str, steps: int, guidance: float, timesteps: int) -> None:
    """Reject out-of-range options with a message naming the option."""
    get_sampler(sampler)
    if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be a whole number from 1 to {timesteps}, got {steps!r}")
    if not np.isfinite(guidance) or not 0 <= guidance <= 20:
        raise ValueError(f"guidance must be between 0 and 20, got {guidance!r}")


@compute.on_compute_thread
@torch.inference_mode()
def generate(model: LoadedModel, masks: np.ndarray | None = None, seeds: Sequence[int] = (0,), *,
             sampler: str = SampleConfig.sampler, steps: int = SampleConfig.steps,
             guidance: float = SampleConfig.guidance, callback: Callback | None = None) -> torch.Tensor:
    """Sample one image per seed, in [-1, 1], (B, C, H, W). `masks` (B, H, W) bool, at the model's size,
    conditions concat/spade models; the vessel model takes none."""
    cfg = model.net_cfg
    schedule = NoiseSchedule(model.diffusion_cfg)
    check_options(sampler, steps, guidance, schedule.timesteps)
    device = next(model.net.parameters()).device
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
    eps_fn = schedule.eps_fn(guided(model.net, cond, guidance if cfg.conditional else 1.0))
    with precision.autocast(model.precision, device):  # the network only: the sampler's arithmetic stays fp32
        return get_sampler(sampler)(eps_fn, x, schedule, steps, generators=gens, callback=callback)


def vessel_masks(images: torch.Tensor) -> np.ndarray:
    """Binary trees from the vessel model's output (B, 1, H, W) in [-1, 1]."""
    return (images[:, 0] > 0).cpu().numpy()


REDRAW_SEED_STRIDE = 1_000_003
TREE_TRIES = 16  # draws per tree: the shipped model passes 28 % of draws, so 0.72 ** 16 = 0.5 % stay implausible


def dream_trees(model: LoadedModel, seeds: Sequence[int], *, min_plausibility: float = 0.0,
                max_tries: int = TREE_TRIES, on_draw: Callable[[int, int], None] | None = None,
                **options) -> tuple[list[np.ndarray | None], list[int]]:
    """Stage 1: one vessel tree per seed from the vessel model. Trees scoring below `min_plausibility`
    (see plausibility.py; the paper kept trees a discriminator scored above 0.8) are redrawn with
    new seeds, up to `max_tries` draws in all; `on_draw(draw, max_tries)` is called before each round
    (draw counts from 1). Returns the trees, None for those that never passed, and the seeds that made
    them (for a None, its last draw's)."""
    from .plausibility import plausibility

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
        drawn = vessel_masks(generate(model, None, [seeds[i] for i in todo], **options))
        for i, tree in zip(todo, drawn):
            if tree.any() and (min_plausibility <= 0 or plausibility(tree).value >= min_plausibility):
                trees[i] = tree
    return trees, seeds


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
