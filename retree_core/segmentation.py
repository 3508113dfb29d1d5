"""The vessel segmenter: a ReTree UNet of role `segment` (photograph in, vessel logits out), trained by
the same loop as the diffusion models (`train --mode segment`) with BCE + soft Dice inside the field of
view, and used like the classical filter: `segmenter(image_rgb, fov) -> probability map`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import compute
from .checkpoint import load_checkpoint
from .data import embedded_example, estimate_fov, split_sample_list
from .data.layouts import load_sample
from .images import from_uint8
from .weights import LoadedModel, export_weights, load_model, read_model_info, resolve

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.01), 2)


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, fov: torch.Tensor,
                      dice_weight: float = 1.0, margin_px: int = 0) -> torch.Tensor:
    """BCE over the field-of-view pixels plus (1 - soft Dice) per image, averaged. `mask` is +1 on
    vessels and -1 elsewhere (as the datasets give it); `fov` is 1 inside the field of view. With
    `margin_px` the loss also covers that band beyond the FOV (its rim, where no vessel is labelled)."""
    target, fov = (mask > 0).float(), fov.float()
    if margin_px > 0:
        fov = F.max_pool2d(fov, 2 * margin_px + 1, stride=1, padding=margin_px)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * fov).sum() / fov.sum().clamp_min(1)
    prob = torch.sigmoid(logits) * fov
    overlap = (prob * target).sum(dim=(1, 2, 3))
    dice = (2 * overlap + 1) / (prob.sum(dim=(1, 2, 3)) + (target * fov).sum(dim=(1, 2, 3)) + 1)
    return bce + dice_weight * (1 - dice).mean()


def segment_logits(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits for images in [-1, 1] (B, 3, H, W); the segmenter's timestep is always 0."""
    return net(images, torch.zeros(images.shape[0], dtype=torch.long, device=images.device))


@compute.on_compute_thread
@torch.no_grad()
def predict_vessels(model: LoadedModel, image_rgb: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Vessel probability (H, W) float32 for a uint8 photograph of any size, zero outside `fov`.

    The image is scaled so that its field of view is as wide as in training (the model's image size),
    padded to a multiple of the network's stride, segmented whole (the network is convolutional) and
    brought back to the photograph's size.
    """
    cfg = model.net_cfg
    fov = np.asarray(fov, dtype=bool)
    height, width = fov.shape
    rows, cols = np.nonzero(fov) if fov.any() else (np.array([0, height - 1]), np.array([0, width - 1]))
    scale = cfg.image_size / max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image_rgb[..., :3], size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    stride = cfg.stride
    pad_y, pad_x = -size[1] % stride, -size[0] % stride
    small = np.pad(small, ((0, pad_y), (0, pad_x), (0, 0)))
    device = next(model.net.parameters()).device
    x = from_uint8(small)[None].to(device)
    prob = torch.sigmoid(segment_logits(model.net, x))[0, 0].cpu().numpy()[:size[1], :size[0]]
    prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(fov, prob, 0).astype(np.float32)


def best_threshold(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], fovs: Sequence[np.ndarray]) -> float:
    """The threshold (0.05 to 0.95) with the best F1 over all field-of-view pixels of the images."""
    prob = np.concatenate([p[f] for p, f in zip(probs, fovs)])
    truth = np.concatenate([t[f].astype(bool) for t, f in zip(truths, fovs)])
    found = prob[None, :] > THRESHOLDS[:, None]
    tp = (found & truth).sum(axis=1)
    f1 = 2 * tp / np.maximum(found.sum(axis=1) + truth.sum(), 1)
    return float(THRESHOLDS[int(np.argmax(f1))])


def choose_threshold(model: LoadedModel, data_roots: Sequence[str] | None, split: str = "train") -> float:
    """The best-F1 threshold of a segmenter on a split of its training data (the fixed validation split is
    kept for reporting); the embedded example when there are no data roots."""
    if data_roots:
        triples = [load_sample(s) for s in split_sample_list(data_roots, split)]
    else:
        triples = [embedded_example()]
    probs, truths, fovs = [], [], []
    for image, truth, fov in triples:
        fov = estimate_fov(image) if fov is None else fov
        probs.append(predict_vessels(model, image, fov))
        truths.append(truth)
        fovs.append(fov)
    return best_threshold(probs, truths, fovs)


def run_threshold(checkpoint) -> float:
    """The threshold to export with a segmenter run: best F1 on the images it trained on (its synthetic
    pairs for a synthetic-only run, else its real data)."""
    cfg = load_checkpoint(checkpoint)["config"]["train"]
    synthetic_only = cfg.get("synthetic_root") and cfg.get("synthetic_fraction", 0) >= 1
    roots = cfg["synthetic_root"] if synthetic_only else cfg["data_root"]
    return choose_threshold(load_model(checkpoint, role="segment"), roots)


def export_run(checkpoint, out_path, fp16: bool = True, guidance: float | None = None,
               style_guidance: dict[str, float] | None = None) -> Path:
    """A training run's weights file (`export` and the app's finished runs): a segmenter with its threshold
    (`run_threshold`), a fundus model with the guidance scales to recommend (in general, per style), where
    given. A weights file as `checkpoint` is written anew with the scales given (the others kept)."""
    sample = {**({} if guidance is None else {"guidance": guidance}),
              **({"guidance_by_style": style_guidance} if style_guidance else {})}
    extra = {"sample": sample} if sample else {}
    from_run = Path(checkpoint).suffix != ".safetensors"
    if from_run and load_checkpoint(checkpoint)["config"]["train"]["mode"] == "segment":
        extra["segment"] = {"threshold": run_threshold(checkpoint)}
    return export_weights(checkpoint, out_path, fp16=fp16, extra_meta=extra)


def stored_threshold(path) -> float:
    """The threshold exported with a segmenter's weights (0.5 for a checkpoint or a file without one)."""
    path = resolve(path)
    info = read_model_info(path) if path.suffix == ".safetensors" else None
    return float(((info or {}).get("segment") or {}).get("threshold", 0.5))


def load_learned_segmenter(name_or_path: str, device: str = "cpu") -> "LearnedSegmenter":
    """A segmenter from weights (name or .safetensors/.ckpt path) with its stored threshold (0.5 if none)."""
    return LearnedSegmenter.from_file(load_model(name_or_path, role="segment", device=device), resolve(name_or_path))


@dataclass
class LearnedSegmenter:
    """A trained segmenter and the threshold chosen for it (`choose_threshold`, stored at export)."""

    model: LoadedModel
    threshold: float = 0.5
    name: str = "learned segmenter"

    @classmethod
    def from_file(cls, model: LoadedModel, path) -> "LearnedSegmenter":
        """The loaded model of weights file `path`, with the threshold stored there, named after the file."""
        return cls(model, stored_threshold(path), f"learned segmenter {Path(path).stem}")

    def __call__(self, image_rgb: np.ndarray, fov: np.ndarray) -> np.ndarray:
        return predict_vessels(self.model, image_rgb, fov)


__all__ = ["LearnedSegmenter", "best_threshold", "choose_threshold", "export_run", "load_learned_segmenter", "predict_vessels", "run_threshold", "stored_threshold", "segment_logits", "segmentation_loss"]
