"""What the one training loop trains: a role object per kind of model, so the loop never asks which.

Each role has its loss for a micro-batch, the rows of its sample grid, and any state it keeps besides
the network (the super-resolution critic, saved in the checkpoint under `state_key`). `make_role`
picks it from the run's config: `Denoise` (vessel, concat, spade), `Segment`, `SuperResolve`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .config import DiffusionConfig, NetConfig, SampleConfig, TrainConfig
from .data import style_of
from .diffusion import NoiseSchedule, diffusion_loss
from .images import to_uint8
from .pipeline import FundusPipeline, generate
from .segmentation import segment_logits, segmentation_loss
from .superres import SRObjective, bicubic, downsample, sr_forward
from .tree_ops import soft_trees
from .tree_sr import tree_sr_input
from .weights import LoadedModel

Items = Sequence[tuple[int, int]]  # a micro-batch's (item index, item seed) pairs


class TrainingRole:
    """The loop's view of a role; subclasses fill in the loss and the grid."""

    state_key: str | None = None  # checkpoint entry of the role's own state, if it has any
    single_process: str | None = None  # why it cannot train under torchrun (DDP), if it cannot

    def __init__(self, cfg: TrainConfig, net_cfg: NetConfig, diff_cfg: DiffusionConfig, device: torch.device):
        self.cfg, self.net_cfg, self.diff_cfg, self.device = cfg, net_cfg, diff_cfg, device

    def loss(self, model: nn.Module, batch: dict, items: Items) -> tuple[Tensor, dict[str, float]]:
        """The loss of one micro-batch and named parts to log (floats)."""
        raise NotImplementedError

    def after_step(self) -> dict[str, float]:
        """Work after each optimiser step (the SR critic's update); parts to log."""
        return {}

    def grid_rows(self, ema: nn.Module, images: Tensor, masks: Tensor) -> list[np.ndarray]:
        """Rows of uint8 pictures of the EMA model's current output on fixed views (called without grad)."""
        raise NotImplementedError

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass


def item_noise(items: Items, shape: torch.Size, timesteps: int, p_uncond: float, styles: bool = False
               ) -> tuple[Tensor, ...]:
    """Per-item timestep, noise and keep-the-mask flag, each drawn from the item's own seed; with `styles`
    also a keep-the-style flag, drawn after them (so the others are as without styles)."""
    ts, noises, keeps, keep_styles = [], [], [], []
    for _, seed in items:
        g = torch.Generator().manual_seed(seed)
        ts.append(torch.randint(0, timesteps, (1,), generator=g))
        noises.append(torch.randn(shape, generator=g))
        keeps.append(torch.rand(1, generator=g) >= p_uncond)
        if styles:
            keep_styles.append(torch.rand(1, generator=g) >= p_uncond)
    out = torch.cat(ts), torch.stack(noises), torch.cat(keeps).float()
    return out + (torch.cat(keep_styles).long(),) if styles else out



class Denoise(TrainingRole):
    """The diffusion models: the vessel model learns the trees (optionally soft), concat and SPADE the
    photographs given their masks, dropped to the null condition for classifier-free guidance."""

    def __init__(self, *args):
        super().__init__(*args)
        self.schedule = NoiseSchedule(self.diff_cfg)

    def inputs(self, batch: dict) -> tuple[Tensor, Tensor | None]:
        """(clean image x0, conditioning mask); soft trees are computed where the batch is, then moved once."""
        if not self.net_cfg.conditional:
            tree = soft_trees(batch["mask"], self.cfg.soft_tree_px) if self.cfg.soft_tree_px else batch["mask"]
            return tree.to(self.device), None
        return batch["image"].to(self.device), batch["mask"].to(self.device)

    def loss(self, model, batch, items):
        x0, mask = self.inputs(batch)
        styles = self.net_cfg.styles
        t, noise, keep, *keep_style = item_noise(items, x0.shape[1:], self.schedule.timesteps,
                                                 self.diff_cfg.p_uncond, bool(styles))
        t, noise = t.to(self.device), noise.to(self.device)
        if mask is not None:
            mask = mask * keep.to(self.device).view(-1, 1, 1, 1)
        extra = {}
        if styles:  # each item's style index, dropped to "any" (0) where its flag says so
            index = torch.tensor([self.net_cfg.style_index(style_of(n)) for n in batch["name"]])
            extra["style"] = (index * keep_style[0]).to(self.device)
        s = self.schedule
        return diffusion_loss(model(s.add_noise(x0, t, noise), t, mask, **extra), s.target(x0, t, noise),
                              self.diff_cfg, item_weight=s.item_weights(t)), {}

    def grid_rows(self, ema, images, masks):
        """Samples from seeds seed + i, DPM-Solver++ with the run's sample steps, plain conditional; for
        concat and SPADE through the pipeline, between their masks and the real images."""
        model = LoadedModel(ema, self.net_cfg, self.diff_cfg, "training run")
        options = SampleConfig("dpmpp", self.cfg.sample_steps, 1.0, self.cfg.seed)
        if not self.net_cfg.conditional:
            seeds = [options.seed + i for i in range(len(images))]
            return [to_uint8(generate(model, None, seeds, steps=options.steps))]
        samples, _ = FundusPipeline(model, aperture=False)(masks[:, 0].cpu().numpy() > 0, options)
        return [to_uint8(masks), samples, to_uint8(images)]


class Segment(TrainingRole):
    """The vessel segmenter: BCE + soft Dice inside the field of view (and a margin beyond it)."""

    def loss(self, model, batch, items):
        logits = segment_logits(model, batch["image"].to(self.device))
        return segmentation_loss(logits, batch["mask"].to(self.device), batch["fov"].to(self.device),
                                 margin_px=self.cfg.fov_margin_px), {}

    def grid_rows(self, ema, images, masks):
        """Photograph, annotation, predicted vessel probability."""
        prob = torch.sigmoid(segment_logits(ema, images)) * 2 - 1
        return [to_uint8(images), to_uint8(masks), to_uint8(prob)]


class TreeSuperResolve(Segment):
    """Stage 1's super-resolution: the segmenter's loss, its input the annotation made into the vessel model's
    soft target at 1/sr_scale, noised per item (`tree_sr.tree_sr_input`)."""

    def tree_input(self, masks: Tensor, items: Items = ()) -> Tensor:
        cfg = self.cfg
        return tree_sr_input(masks, cfg.sr_scale, cfg.soft_tree_px, items, cfg.input_noise if items else 0.0)

    def loss(self, model, batch, items):
        logits = segment_logits(model, self.tree_input(batch["mask"], items).to(self.device))
        return segmentation_loss(logits, batch["mask"].to(self.device), batch["fov"].to(self.device),
                                 margin_px=self.cfg.fov_margin_px), {}

    def grid_rows(self, ema, images, masks):
        """The enlarged soft input, the predicted vessel probability, the annotation."""
        base = self.tree_input(masks)
        prob = torch.sigmoid(segment_logits(ema, base)) * 2 - 1
        return [to_uint8(base), to_uint8(prob), to_uint8(masks)]


class SuperResolve(TrainingRole):
    """Mask-conditioned super-resolution: the paper's losses, with a critic trained in the same loop."""

    state_key = "sr"
    single_process = "its discriminator is not distributed"

    def __init__(self, *args):
        super().__init__(*args)
        self.objective = SRObjective(self.cfg, self.device)

    def loss(self, model, batch, items):
        return self.objective.generator_loss(model, batch, self.device, items)

    def after_step(self):
        return {"discriminator": self.objective.discriminator_step()}

    def grid_rows(self, ema, images, masks):
        """Bicubic upsampling, super-resolved, the real photograph."""
        small = downsample(images, self.net_cfg.sr_scale)
        return [to_uint8(bicubic(small, images.shape[-2:])), to_uint8(sr_forward(ema, small, masks)),
                to_uint8(images)]

    def state_dict(self):
        return self.objective.state_dict()

    def load_state_dict(self, state):
        self.objective.load_state_dict(state)


ROLE_CLASSES: dict[str, type[TrainingRole]] = {"vessel": Denoise, "concat": Denoise, "spade": Denoise,
                                                "segment": Segment, "sr": SuperResolve,
                                                "treesr": TreeSuperResolve}


def make_role(cfg: TrainConfig, net_cfg: NetConfig, diff_cfg: DiffusionConfig, device: torch.device) -> TrainingRole:
    return ROLE_CLASSES[net_cfg.role](cfg, net_cfg, diff_cfg, device)


__all__ = ["Denoise", "ROLE_CLASSES", "Segment", "SuperResolve", "TrainingRole", "TreeSuperResolve", "item_noise",
           "make_role"]
