"""One training loop for every role (vessel, concat, spade diffusion models; the segment vessel segmenter).

Resumable by construction: the batch order, augmentation, timestep and noise of every item are drawn
from generators seeded by (seed, the item's position in the run), so a resumed run sees exactly the
data and noise an uninterrupted one would, and N processes under `torchrun` (DDP) see exactly what
one process with an N times larger batch would.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed, precision
from .checkpoint import (CHECKPOINT_NAME, atomic_write, load_checkpoint, remove_stale_temps, rng_state,
                         save_checkpoint, set_rng_state)
from .config import TrainConfig, from_dict, to_dict
from .data import AugmentConfig, MixedDataset, ProceduralTrees, make_dataset
from .diffusion import NoiseSchedule, diffusion_loss
from .images import grid, save_png, to_uint8
from .nets import build_net, count_parameters
from .samplers import dpmpp_2m, guided, make_generators, randn
from .segmentation import segment_logits, segmentation_loss

LOG_NAME = "log.jsonl"


def step_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of its integer parts."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class StepBatches:
    """Batch sampler: for each optimiser step from `start_step`, each micro-batch of this rank as a list
    of (item index, augmentation seed). Epochs are seeded permutations of the dataset."""

    def __init__(self, n_items: int, batch_size: int, grad_accum: int, world: int, rank: int,
                 seed: int, start_step: int, total_steps: int):
        self.n, self.b, self.accum, self.world, self.rank = n_items, batch_size, grad_accum, world, rank
        self.seed, self.start, self.total = seed, start_step, total_steps
        self._perm = lru_cache(maxsize=4)(lambda epoch: np.random.default_rng([seed, epoch]).permutation(n_items))

    @property
    def global_batch(self) -> int:
        return self.b * self.accum * self.world

    def __len__(self) -> int:
        return (self.total - self.start) * self.accum

    def batch(self, step: int, micro: int) -> list[tuple[int, int]]:
        """This rank's share of a micro-batch: (item index, per-item seed) from global positions, so
        an item's augmentation and noise do not depend on how the batch is split across processes."""
        first = step * self.global_batch + (micro * self.world + self.rank) * self.b
        return [(int(self._perm(pos // self.n)[pos % self.n]), step_seed(self.seed, pos))
                for pos in range(first, first + self.b)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            for micro in range(self.accum):
                yield self.batch(step, micro)


def update_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float, step: int) -> None:
    """Exponential moving average of the weights, with a warm-up so short runs are not dominated by
    the random initialisation: the effective decay is min(decay, (1 + step) / (10 + step))."""
    decay = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(ema.buffers(), net.buffers()):
            e.copy_(b)


def soft_trees(masks: torch.Tensor, px: float) -> torch.Tensor:
    """Masks (B, 1, H, W) in [-1, 1] as smooth trees: tanh(signed distance to the vessel edge / px), above 0
    exactly on the vessels, so the tree is the positive part as for a binary mask. Vessels a pixel wide
    at 128 px become ridges with a few pixels of slope that the coarse levels of the network can see."""
    out = []
    for m in (masks[:, 0] > 0).cpu().numpy().astype(np.uint8):
        inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)  # to the nearest background pixel
        outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)  # to the nearest vessel pixel
        out.append(np.tanh(np.where(m > 0, inside - 0.5, 0.5 - outside) / px))
    return torch.from_numpy(np.stack(out)[:, None]).to(masks)


def _training_inputs(batch: dict, role: str, dev: torch.device,
                     soft_px: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(clean image x0, conditioning mask) for a role: the vessel model learns the masks themselves."""
    if role == "vessel":  # soft trees are computed where the batch is (the CPU), then moved once
        return (soft_trees(batch["mask"], soft_px) if soft_px else batch["mask"]).to(dev), None
    return batch["image"].to(dev), batch["mask"].to(dev)


def _item_noise(items: list[tuple[int, int]], shape: torch.Size, timesteps: int,
                p_uncond: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-item timestep, noise and keep-the-mask flag, each drawn from the item's own seed."""
    ts, noises, keeps = [], [], []
    for _, seed in items:
        g = torch.Generator().manual_seed(seed)
        ts.append(torch.randint(0, timesteps, (1,), generator=g))
        noises.append(torch.randn(shape, generator=g))
        keeps.append(torch.rand(1, generator=g) >= p_uncond)
    return torch.cat(ts), torch.stack(noises), torch.cat(keeps).float()


def _denoising_loss(model: torch.nn.Module, batch: dict, items: list[tuple[int, int]], role: str,
                    schedule: NoiseSchedule, diff_cfg, dev: torch.device, soft_px: float = 0.0) -> torch.Tensor:
    """The paper's loss for one micro-batch: noise each item at its own timestep, predict the noise."""
    x0, mask = _training_inputs(batch, role, dev, soft_px)
    t, noise, keep = _item_noise(items, x0.shape[1:], schedule.timesteps, diff_cfg.p_uncond)
    t, noise = t.to(dev), noise.to(dev)
    if mask is not None:  # classifier-free guidance: drop the mask to the null condition
        mask = mask * keep.to(dev).view(-1, 1, 1, 1)
    return diffusion_loss(model(schedule.add_noise(x0, t, noise), t, mask), schedule.target(x0, t, noise), diff_cfg,
                          item_weight=schedule.item_weights(t))


def _row_step(line: str) -> float:
    """The step of a log line; infinity for a blank line or one torn by a kill mid-write (dropped)."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows past `step`, so a resumed run continues the log without duplicates. Replaced
    atomically (same permissions): a kill during the rewrite must not lose the rows that stay."""
    if path.exists():
        rows = [r for r in path.read_text().splitlines() if _row_step(r) <= step]
        mode = path.stat().st_mode & 0o777

        def write(tmp: str) -> None:
            Path(tmp).write_text("".join(r + "\n" for r in rows))
            os.chmod(tmp, mode)

        atomic_write(path, write)


def sample_grid(ema: torch.nn.Module, cfg: TrainConfig, dataset, step: int, out_dir: Path, dev: torch.device) -> Path:
    """A picture of the EMA model's current samples (rows: mask, sample, real image for conditional roles)."""
    n = min(4, len(dataset))
    items = [dataset[(i, i)] for i in range(n)]  # fixed views, comparable across steps
    masks = torch.stack([it["mask"] for it in items]).to(dev)
    images = torch.stack([it["image"] for it in items]).to(dev)
    net_cfg = ema.cfg
    role = net_cfg.role
    if role == "segment":  # rows: photograph, annotation, predicted vessel probability
        with torch.no_grad():
            prob = torch.sigmoid(segment_logits(ema, images)) * 2 - 1
        return save_png(out_dir / "samples" / f"step_{step:07d}.png",
                        grid([to_uint8(images), to_uint8(masks), to_uint8(prob)]))
    if role == "sr":  # rows: bicubic upsampling, super-resolved, the real photograph
        from .superres import bicubic, downsample, sr_forward

        with torch.no_grad():
            small = downsample(images, net_cfg.sr_scale)
            rows = [to_uint8(bicubic(small, images.shape[-2:])), to_uint8(sr_forward(ema, small, masks)),
                    to_uint8(images)]
        return save_png(out_dir / "samples" / f"step_{step:07d}.png", grid(rows))
    schedule = NoiseSchedule(cfg.diffusion())
    gens = make_generators([cfg.seed + i for i in range(n)])
    x = randn((n, net_cfg.image_channels, cfg.image_size, cfg.image_size), gens, dev)
    cond = None if role == "vessel" else masks
    out = dpmpp_2m(schedule.eps_fn(guided(ema, cond)), x, schedule, cfg.sample_steps, generators=gens)
    rows = [to_uint8(out)] if role == "vessel" else [to_uint8(masks), to_uint8(out), to_uint8(images)]
    return save_png(out_dir / "samples" / f"step_{step:07d}.png", grid(rows))


SCHEDULE_FIELDS = ("schedule", "timesteps", "beta_start", "beta_end", "prediction")  # what a denoiser depends on


def warm_start(net: torch.nn.Module, ema: torch.nn.Module, source: str, net_cfg, diff_cfg) -> int:
    """Copy a model file's weights into a new run's network and EMA (the optimiser starts afresh) and
    return the steps behind them. The file must hold the same network and noise schedule; the
    differences are named if not."""
    from .weights import load_model

    loaded = load_model(source, role=net_cfg.role)
    theirs, ours = to_dict(loaded.net_cfg), to_dict(net_cfg)
    differ = [f"{k} {theirs[k]!r} (this run: {ours[k]!r})" for k in ours if theirs[k] != ours[k]]
    theirs, ours = to_dict(loaded.diffusion_cfg), to_dict(diff_cfg)
    differ += [f"{k} {theirs[k]!r} (this run: {ours[k]!r})" for k in SCHEDULE_FIELDS if theirs[k] != ours[k]]
    if differ:
        raise ValueError(f"--init_weights {source}: the file's model differs from this run's: {'; '.join(differ)}")
    net.load_state_dict(loaded.net.state_dict())
    ema.load_state_dict(loaded.net.state_dict())
    return loaded.trained_steps


def training_dataset(cfg: TrainConfig):
    """The run's training items: real data (or the embedded example), optionally mixed with synthetic pairs."""
    if cfg.crop_px is not None and cfg.mode not in ("segment", "sr"):
        raise ValueError("--crop_px (patch training) is for the segmenter and sr; diffusion models train on "
                         "whole images")
    if cfg.mode == "sr" and cfg.crop_px is not None:
        multiple = cfg.sr_scale * cfg.net().stride
        if cfg.crop_px % multiple:
            raise ValueError(f"--crop_px {cfg.crop_px} must be a multiple of {multiple} (sr_scale x the network's "
                             "stride), so that the input crop is whole and fits the network")
    if cfg.soft_tree_px and cfg.mode != "vessel":
        raise ValueError("--soft_tree_px is the vessel model's training target; it is for --mode vessel")
    if cfg.procedural_fraction and (cfg.mode != "vessel" or cfg.synthetic_root):
        raise ValueError("--procedural_fraction mixes procedural trees into a vessel run's real trees; "
                         "it is for --mode vessel without --synthetic_root")
    extras = AugmentConfig(color_jitter=cfg.color_jitter, vessel_fade=cfg.vessel_fade, blur_sigma=cfg.blur_sigma,
                           noise_std=cfg.noise_std, vessel_reflex=cfg.vessel_reflex, illumination=cfg.illumination,
                           enabled=cfg.augment)
    if cfg.mode != "segment" and (extras.extras_set or cfg.fov_margin_px):
        raise ValueError("--vessel_fade, --blur_sigma, --noise_std, --vessel_reflex, --illumination and "
                         "--fov_margin_px are for --mode segment: on a generator's training images they would "
                         "teach it faded, blurred, noisy or unevenly lit photographs")
    # the photometric extras make clearly drawn synthetic vessels look like real ones: with synthetic pairs
    # they apply to those only (on real photographs they fade and blur away the faint vessels)
    plain = AugmentConfig(color_jitter=cfg.color_jitter, enabled=cfg.augment) if cfg.synthetic_root else extras
    real = lambda: make_dataset(cfg.data_root, cfg.image_size, plain, crop_px=cfg.crop_px)  # noqa: E731
    if cfg.procedural_fraction:
        extra, fraction = ProceduralTrees(cfg.image_size), cfg.procedural_fraction
    elif cfg.synthetic_root:
        extra = make_dataset(cfg.synthetic_root, cfg.image_size, extras, crop_px=cfg.crop_px)
        fraction = cfg.synthetic_fraction
    else:
        return real()
    return extra if fraction >= 1 else MixedDataset(real(), extra, fraction)


def train(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> Path:
    """Train until the step budget is spent (or `should_stop()` turns true); return the checkpoint path.
    `on_log` receives every loss-log row (the app plots them)."""
    info = distributed.setup(cfg.device)
    dev, out_dir = info.device, Path(cfg.output_dir)
    net_cfg, diff_cfg = cfg.net(), cfg.diffusion()
    role = net_cfg.role
    ckpt_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME

    dataset = training_dataset(cfg)  # DataError early
    state = None
    if cfg.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        saved = from_dict(TrainConfig, state["config"]["train"])
        if saved.mode != cfg.mode or saved.preset != cfg.preset or saved.image_size != cfg.image_size:
            raise ValueError(f"{ckpt_path}: was trained as mode={saved.mode} preset={saved.preset} "
                             f"image_size={saved.image_size}; resume with the same settings")
    elif cfg.resume and info.is_main:
        print(f"--resume: no checkpoint in {out_dir}, starting a new run")

    torch.manual_seed(cfg.seed)
    net = build_net(net_cfg, diff_cfg).to(dev)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_step, init_steps = 0, 0
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start_step = int(state["step"])
        init_steps = int(state.get("init_steps", 0))
    elif cfg.init_weights:
        init_steps = warm_start(net, ema, cfg.init_weights, net_cfg, diff_cfg)
    model = DistributedDataParallel(net) if info.world > 1 else net
    objective = None
    if role == "sr":  # the adversarial term's critic (and the perceptual network) live beside the model
        from .superres import SRObjective

        if info.world > 1:
            raise ValueError("mode sr trains in one process: its discriminator is not distributed")

        objective = SRObjective(cfg, dev)
        if state is not None and "sr" in state:
            objective.load_state_dict(state["sr"])

    plan = StepBatches(len(dataset), cfg.batch_size, cfg.grad_accum, info.world, info.rank, cfg.seed, start_step, 0)
    steps_per_epoch = max(1, math.ceil(len(dataset) / plan.global_batch))
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    plan.total = total_steps
    loader = DataLoader(dataset, batch_sampler=plan, num_workers=cfg.num_workers,
                        persistent_workers=cfg.num_workers > 0)
    schedule = NoiseSchedule(diff_cfg)
    autocast = lambda: precision.autocast(cfg.precision, dev)  # noqa: E731

    def checkpoint(step: int) -> None:
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "init_steps": init_steps, "rng": rng_state(),
                **({"sr": objective.state_dict()} if objective else {}),
                "config": {"train": to_dict(cfg), "net": to_dict(net_cfg), "diffusion": to_dict(diff_cfg)}})
        distributed.barrier()

    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temps(ckpt_path) + remove_stale_temps(log_path):
            print(f"removed {stale.name}, left by a run killed while writing it")
        _truncate_log(log_path, start_step)
        print(f"training {role} ({cfg.preset}, {count_parameters(net) / 1e6:.2f} M parameters) on "
              f"{len(dataset)} items, {info.world} process(es) on {dev} in "
              f"{precision.resolve(cfg.precision, dev)}, steps {start_step} -> {total_steps}")
    bar = tqdm(total=total_steps, initial=start_step, disable=not (cfg.progress and info.is_main),
               unit="step", dynamic_ncols=True)
    batches = iter(loader)
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    step, tic = start_step, time.perf_counter()
    net.train()
    while step < total_steps and not (should_stop and should_stop()):
        loss_sum, parts = 0.0, {}
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            last = micro == cfg.grad_accum - 1
            sync = nullcontext() if last or info.world == 1 else model.no_sync()
            with sync:
                with autocast():
                    if role == "segment":
                        logits = segment_logits(model, batch["image"].to(dev))
                        loss = segmentation_loss(logits, batch["mask"].to(dev), batch["fov"].to(dev),
                                                 margin_px=cfg.fov_margin_px)
                    elif role == "sr":
                        loss, parts = objective.generator_loss(model, batch, dev, plan.batch(step, micro))
                    else:
                        loss = _denoising_loss(model, batch, plan.batch(step, micro), role, schedule, diff_cfg,
                                               dev, cfg.soft_tree_px)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.item() / cfg.grad_accum
        loss_mean = distributed.mean_across(loss_sum, dev)  # every rank sees the same value
        if not math.isfinite(loss_mean):
            raise FloatingPointError(f"loss became {loss_mean} at step {step}; lower --lr or check the data")
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(ema, net, cfg.ema_decay, step)
        if objective is not None:
            parts["discriminator"] = objective.discriminator_step()
        step += 1
        if deadline is not None and distributed.mean_across(float(time.monotonic() > deadline), dev) > 0:
            total_steps = step  # the budget is spent: checkpoint, sample, stop (every rank at the same step)

        toc = time.perf_counter()
        row = {"step": step, "epoch": round(step / steps_per_epoch, 4),
               "loss": loss_mean, "lr": opt.param_groups[0]["lr"],
               "images_per_s": round(plan.global_batch / (toc - tic), 3),
               **{k: round(v, 5) for k, v in parts.items() if v is not None}}
        tic = toc
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=row["images_per_s"])
        if info.is_main:
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if on_log:
                on_log(row)
        if step % cfg.checkpoint_interval == 0 or step == total_steps:
            checkpoint(step)
        if info.is_main and (step % cfg.sample_interval == 0 or step == total_steps):
            sample_grid(ema, cfg, dataset, step, out_dir, dev)
            tic = time.perf_counter()  # sampling time is not training throughput
    if step % cfg.checkpoint_interval and step != total_steps:  # stopped early: keep what was done
        checkpoint(step)
    bar.close()
    distributed.cleanup()
    return ckpt_path
