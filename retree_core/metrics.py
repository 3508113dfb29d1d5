"""Vessel segmentation metrics inside the field of view, the evaluation protocol's numbers.

Every metric is computed from one confusion matrix counted inside the FOV only (pixels outside it
are not retina and would inflate accuracy and specificity). Pure numpy; a 1000x1000 image takes a few
tens of milliseconds including the AUC.

Conventions, so that no metric is ever NaN: a ratio whose denominator is zero (e.g. precision when
nothing is predicted, recall when the truth has no vessel, AUC when the truth has one class only) is
1.0 if the prediction equals the truth everywhere in the FOV and 0.0 otherwise. So two empty masks
have Dice 1, an empty prediction of a non-empty truth has precision 0, and an empty FOV scores 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("f1", "jaccard", "kappa", "mcc", "precision", "recall", "specificity", "accuracy", "auc")


@dataclass(frozen=True)
class Confusion:
    """Pixel counts inside the FOV: vessel predicted and true (tp), predicted only (fp), and so on."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def perfect(self) -> bool:
        """The prediction equals the truth at every counted pixel (the rule for undefined ratios)."""
        return self.fp == 0 and self.fn == 0


def _check_shapes(*arrays: np.ndarray | None) -> None:
    shapes = {np.shape(a) for a in arrays if a is not None}
    if len(shapes) > 1:
        raise ValueError(f"arrays differ in shape: {', '.join(str(s) for s in sorted(shapes))}")


def confusion(pred: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None) -> Confusion:
    """Confusion matrix of two bool masks, counted inside `fov` (None: the whole image)."""
    _check_shapes(pred, truth, fov)
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    region = np.ones(pred.shape, dtype=bool) if fov is None else np.asarray(fov, dtype=bool)
    total = int(np.count_nonzero(region))
    tp = int(np.count_nonzero(pred & truth & region))
    predicted = int(np.count_nonzero(pred & region))
    true = int(np.count_nonzero(truth & region))
    fp, fn = predicted - tp, true - tp
    return Confusion(tp=tp, fp=fp, tn=total - tp - fp - fn, fn=fn)


def _ratio(numerator: float, denominator: float, perfect: bool) -> float:
    """numerator / denominator, or the module's convention (1 if perfect else 0) when it is zero."""
    if denominator == 0:
        return 1.0 if perfect else 0.0
    return float(numerator / denominator)


def threshold_metrics(c: Confusion) -> dict[str, float]:
    """Every metric of a binary prediction (all of METRIC_NAMES except auc) from its confusion matrix."""
    tp, fp, tn, fn = (float(v) for v in (c.tp, c.fp, c.tn, c.fn))  # floats: products overflow no int64
    n = tp + fp + tn + fn
    accuracy = _ratio(tp + tn, n, c.perfect)
    chance = _ratio((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp), n * n, c.perfect)
    mcc_denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, c.perfect),
        "jaccard": _ratio(tp, tp + fp + fn, c.perfect),
        "kappa": _ratio(accuracy - chance, 1.0 - chance, c.perfect),
        "mcc": _ratio(tp * tn - fp * fn, mcc_denominator, c.perfect),
        "precision": _ratio(tp, tp + fp, c.perfect),
        "recall": _ratio(tp, tp + fn, c.perfect),
        "specificity": _ratio(tn, tn + fp, c.perfect),
        "accuracy": accuracy,
    }


def auc(scores: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None) -> float:
    """Area under the ROC curve of `scores` for the bool `truth`, inside `fov`.

    Exact, ties included: the Mann-Whitney statistic, i.e. the probability that a random vessel pixel
    scores above a random background pixel, a tie counting one half (the same as mid-ranks). Raises
    ValueError when the region holds only one class (AUC is undefined; see `vessel_metrics`).
    """
    _check_shapes(scores, truth, fov)
    scores, truth = np.asarray(scores), np.asarray(truth, dtype=bool)
    if fov is not None:
        region = np.asarray(fov, dtype=bool)
        scores, truth = scores[region], truth[region]
    vessel_scores, background_scores = scores[truth], np.sort(scores[~truth], axis=None)
    if vessel_scores.size == 0 or background_scores.size == 0:
        raise ValueError(f"AUC needs both classes ({vessel_scores.size} vessel, "
                         f"{background_scores.size} background pixels)")
    below = np.searchsorted(background_scores, vessel_scores, side="left")  # background scoring lower
    not_above = np.searchsorted(background_scores, vessel_scores, side="right")  # lower or tied
    wins = below.sum(dtype=np.float64) + 0.5 * (not_above - below).sum(dtype=np.float64)
    return float(wins / (float(vessel_scores.size) * float(background_scores.size)))


def vessel_metrics(prob_or_pred: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None,
                   threshold: float = 0.5) -> dict[str, float]:
    """All METRIC_NAMES of a prediction against the bool `truth`, inside `fov` (None: everywhere).

    `prob_or_pred` is a probability map (float, vessel where > threshold; AUC ranks the map itself)
    or a bool mask (its AUC is then the balanced accuracy). f1 equals Dice.
    """
    _check_shapes(prob_or_pred, truth, fov)
    scores = np.asarray(prob_or_pred)
    pred = scores if scores.dtype == bool else scores > threshold
    c = confusion(pred, truth, fov)
    out = threshold_metrics(c)
    one_class = c.tp + c.fn == 0 or c.tn + c.fp == 0
    out["auc"] = (1.0 if c.perfect else 0.0) if one_class else auc(scores, truth, fov)
    return out


def dice(a: np.ndarray, b: np.ndarray, fov: np.ndarray | None = None) -> float:
    """Dice (= F1) of two bool masks inside `fov`; 1.0 when both are empty there."""
    c = confusion(a, b, fov)
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, c.perfect)


__all__ = ["Confusion", "METRIC_NAMES", "auc", "confusion", "dice", "threshold_metrics", "vessel_metrics"]
