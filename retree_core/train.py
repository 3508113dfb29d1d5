"""One training loop for every role (vessel, concat, spade diffusion models; the segment vessel segmenter).

Resumable by construction: the batch order, augmentation, timestep and noise of every item are drawn
from generators seeded by (seed, the item's position in the run), so a resumed run sees exactly the
data and noise an uninterrupted one would, and N processes under `torchrun` (DDP) see exactly what
one process with an N times larger batch would.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed, precision
from .checkpoint import (CHECKPOINT_NAME, atomic_write, load_checkpoint, remove_stale_temps, rng_state,
                         save_checkpoint, set_rng_state)
from .config import DENOISERS, TrainConfig, from_dict, to_dict
from .data import AugmentConfig, MixedDataset, ProceduralTrees, make_dataset, style_of
from .images import grid, save_png
from .logs import log
from .nets import build_net, count_parameters
from .roles import TrainingRole, make_role
from .weights import load_model

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


def sample_grid(ema: torch.nn.Module, role: TrainingRole, dataset, step: int, out_dir: Path,
                dev: torch.device) -> Path:
    """A picture of the EMA model's current output on fixed views, comparable across steps (the role's rows)."""
    items = [dataset[(i, i)] for i in range(min(4, len(dataset)))]
    masks = torch.stack([it["mask"] for it in items]).to(dev)
    images = torch.stack([it["image"] for it in items]).to(dev)
    with torch.no_grad():
        rows = role.grid_rows(ema, images, masks)
    return save_png(out_dir / "samples" / f"step_{step:07d}.png", grid(rows))


SCHEDULE_FIELDS = ("schedule", "timesteps", "beta_start", "beta_end", "prediction")  # what a denoiser depends on


def warm_start(net: torch.nn.Module, ema: torch.nn.Module, source: str, net_cfg, diff_cfg) -> int:
    """Copy a model file's weights into a new run's network and EMA (the optimiser starts afresh) and
    return the steps behind them. The file must hold the same network and noise schedule; the
    differences are named if not."""
    loaded = load_model(source, role=net_cfg.role)
    theirs, ours = to_dict(loaded.net_cfg), to_dict(net_cfg)
    add_styles = not theirs["styles"] and bool(ours["styles"])  # a file without styles starts a style run
    free = {"styles"} if add_styles else set()
    if net_cfg.role in ("sr", "treesr"):  # the network reads the bicubic-enlarged input: any factor fits
        free.add("sr_scale")
    differ = [f"{k} {theirs[k]!r} (this run: {ours[k]!r})" for k in ours if theirs[k] != ours[k] and k not in free]
    theirs, ours = to_dict(loaded.diffusion_cfg), to_dict(diff_cfg)
    if net_cfg.role in DENOISERS:  # the other roles do not use a noise schedule
        differ += [f"{k} {theirs[k]!r} (this run: {ours[k]!r})" for k in SCHEDULE_FIELDS if theirs[k] != ours[k]]
    if differ:
        hint = (" (the shipped files use the paper's recipe: add --prediction eps --loss_weighting uniform "
                "--l1_weight 1)" if net_cfg.role in DENOISERS and theirs["prediction"] != ours["prediction"] else "")
        raise ValueError(f"--init_weights {source}: the file's model differs from this run's: {'; '.join(differ)}"
                         f"{hint}")
    for target in (net, ema):  # a new style embedding keeps its zeros: the run starts as the file's model
        missing, unexpected = target.load_state_dict(loaded.net.state_dict(), strict=not add_styles)
        if unexpected or any(not k.startswith("style_emb.") for k in missing):
            raise ValueError(f"--init_weights {source}: weights do not fit ({missing + unexpected})")
    return loaded.trained_steps


STYLE_LR_SCALE = 10.0  # the style vectors start at zero (a warm start begins as its file's model) and would take
# tens of thousands of steps at the network's rate to reach the time embedding's scale (docs/experiments.md)


def param_groups(net: torch.nn.Module, lr: float) -> list[dict]:
    """The optimiser's parameter groups: the network at `lr`, its style vectors (if any) at STYLE_LR_SCALE x."""
    style = [p for name, p in net.named_parameters() if name.startswith("style_emb.")]
    rest = [p for name, p in net.named_parameters() if not name.startswith("style_emb.")]
    return [{"params": rest}] + ([{"params": style, "lr": lr * STYLE_LR_SCALE}] if style else [])


def lr_factor(step: int, total_steps: int, cooldown_steps: int) -> float:
    """The learning rate's share at `step` (0-based) of `total_steps`: 1, then linearly to 1/cooldown_steps
    over the last `cooldown_steps` steps (a warmup-stable-decay schedule's decay, Hägele et al. 2024)."""
    return 1.0 if cooldown_steps <= 0 else min(1.0, (total_steps - step) / cooldown_steps)


def training_dataset(cfg: TrainConfig):
    """The run's training items: real data (or the embedded example), optionally mixed with synthetic pairs."""
    cfg.check()
    extras = AugmentConfig(color_jitter=cfg.color_jitter, vessel_fade=cfg.vessel_fade, blur_sigma=cfg.blur_sigma,
                           noise_std=cfg.noise_std, vessel_reflex=cfg.vessel_reflex, illumination=cfg.illumination,
                           enabled=cfg.augment)
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


def _append_row(log_path: Path, row: dict, on_log: Callable[[dict], None] | None) -> None:
    """One loss-log row: appended to log.jsonl, and handed to `on_log` (the app plots them)."""
    with open(log_path, "a") as f:
        f.write(json.dumps(row) + "\n")
    if on_log:
        on_log(row)


def _checkpoint_to_resume(cfg: TrainConfig, ckpt_path: Path, is_main: bool) -> dict | None:
    """The run's checkpoint when resuming (refused if it was trained as another model), else None."""
    if not cfg.resume:
        return None
    if not ckpt_path.exists():
        if is_main:
            log.warning("--resume: no checkpoint in %s, starting a new run", ckpt_path.parent)
        return None
    state = load_checkpoint(ckpt_path)
    saved = from_dict(TrainConfig, state["config"]["train"])
    if saved.mode != cfg.mode or saved.preset != cfg.preset or saved.image_size != cfg.image_size:
        raise ValueError(f"{ckpt_path}: was trained as mode={saved.mode} preset={saved.preset} "
                         f"image_size={saved.image_size}; resume with the same settings")
    return state


def _restore(state: dict | None, cfg: TrainConfig, net, ema, opt) -> tuple[int, int]:
    """Load a resumed run's network, EMA, optimiser and random state (or a new run's `init_weights`);
    (the run's step, the steps before it)."""
    if state is None:
        return 0, warm_start(net, ema, cfg.init_weights, net.cfg, cfg.diffusion()) if cfg.init_weights else 0
    net.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return int(state["step"]), int(state.get("init_steps", 0))


def _gradients(model, role: TrainingRole, batches: Iterator[dict], plan: StepBatches, step: int,
               cfg: TrainConfig, info) -> tuple[float, dict[str, float]]:
    """Accumulate one optimiser step's gradients over its micro-batches (autocast per cfg.precision);
    the mean loss over all processes and the role's logged parts."""
    loss_sum, parts = 0.0, {}
    for micro in range(cfg.grad_accum):
        batch = next(batches)
        last = micro == cfg.grad_accum - 1
        with nullcontext() if last or info.world == 1 else model.no_sync():
            with precision.autocast(cfg.precision, info.device):
                loss, parts = role.loss(model, batch, plan.batch(step, micro))
            (loss / cfg.grad_accum).backward()
        loss_sum += loss.item() / cfg.grad_accum
    return distributed.mean_across(loss_sum, info.device), parts  # every rank sees the same value


def train(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> Path:
    """Train until the step budget is spent (or `should_stop()` turns true); return the checkpoint path.
    `on_log` receives every loss-log row (the app plots them)."""
    info = distributed.setup(cfg.device)
    dev, out_dir = info.device, Path(cfg.output_dir)
    net_cfg, diff_cfg = cfg.net(), cfg.diffusion()
    ckpt_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME

    dataset = training_dataset(cfg)  # DataError early
    if cfg.style_condition:  # one style per data root, in a fixed order
        net_cfg = dataclasses.replace(net_cfg, styles=tuple(sorted({style_of(n) for n in dataset.names})))
    state = _checkpoint_to_resume(cfg, ckpt_path, info.is_main)
    torch.manual_seed(cfg.seed)
    net = build_net(net_cfg, diff_cfg).to(dev, memory_format=torch.channels_last if cfg.channels_last
                                          else torch.contiguous_format)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    opt = torch.optim.AdamW(param_groups(net, cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_lrs = [group["lr"] for group in opt.param_groups]  # before a resumed state's (decayed) rates
    start_step, init_steps = _restore(state, cfg, net, ema, opt)
    model = DistributedDataParallel(net) if info.world > 1 else net
    model = torch.compile(model) if cfg.compile else model
    role = make_role(cfg, net_cfg, diff_cfg, dev)  # its loss, grid and own state (the sr critic)
    if info.world > 1 and role.single_process:
        raise ValueError(f"mode {cfg.mode} trains in one process: {role.single_process}")
    if state is not None and role.state_key in state:
        role.load_state_dict(state[role.state_key])

    plan = StepBatches(len(dataset), cfg.batch_size, cfg.grad_accum, info.world, info.rank, cfg.seed, start_step, 0)
    steps_per_epoch = max(1, math.ceil(len(dataset) / plan.global_batch))
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    plan.total = total_steps
    loader = DataLoader(dataset, batch_sampler=plan, num_workers=cfg.num_workers,
                        persistent_workers=cfg.num_workers > 0)

    def checkpoint(step: int) -> None:
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "init_steps": init_steps, "rng": rng_state(),
                **({role.state_key: role.state_dict()} if role.state_key else {}),
                "config": {"train": to_dict(cfg), "net": to_dict(net_cfg), "diffusion": to_dict(diff_cfg)}})
        distributed.barrier()

    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temps(ckpt_path) + remove_stale_temps(log_path):
            log.warning("removed %s, left by a run killed while writing it", stale.name)
        _truncate_log(log_path, start_step)
        log.info("training %s (%s, %.2f M parameters) on %d items, %d process(es) on %s in %s, steps %d -> %d",
                 net_cfg.role, cfg.preset, count_parameters(net) / 1e6, len(dataset), info.world, dev,
                 precision.resolve(cfg.precision, dev), start_step, total_steps)
    bar = tqdm(total=total_steps, initial=start_step, disable=not (cfg.progress and info.is_main),
               unit="step", dynamic_ncols=True)
    batches = iter(loader)
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    step, tic = start_step, time.perf_counter()
    net.train()
    while step < total_steps and not (should_stop and should_stop()):
        loss_mean, parts = _gradients(model, role, batches, plan, step, cfg, info)
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        for group, base_lr in zip(opt.param_groups, base_lrs):
            group["lr"] = base_lr * lr_factor(step, total_steps, cfg.cooldown_steps)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(ema, net, cfg.ema_decay, step)
        parts.update(role.after_step())
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
            _append_row(log_path, row, on_log)
        if step % cfg.checkpoint_interval == 0 or step == total_steps:
            checkpoint(step)
        if info.is_main and (step % cfg.sample_interval == 0 or step == total_steps):
            sample_grid(ema, role, dataset, step, out_dir, dev)
            tic = time.perf_counter()  # sampling time is not training throughput
    if step % cfg.checkpoint_interval and step != total_steps:  # stopped early: keep what was done
        checkpoint(step)
    bar.close()
    distributed.cleanup()
    return ckpt_path
