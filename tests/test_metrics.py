"""Vessel metrics against confusion matrices and AUCs computed by hand."""
import itertools

import numpy as np
import pytest

from retree_core.metrics import METRIC_NAMES, Confusion, auc, confusion, dice, threshold_metrics, vessel_metrics

# Example used throughout; pixels compared one by one:
#   truth        pred
#   1 1 0 0      1 0 1 0
#   1 0 0 0      1 0 0 0
#   0 0 0 1      0 0 1 1
# tp = (0,0) (1,0) (2,3) = 3; fp = (0,2) (2,2) = 2; fn = (0,1) = 1; tn = 12 - 6 = 6.
TRUTH = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=bool)
PRED = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=bool)


def test_confusion_of_the_example() -> None:
    assert confusion(PRED, TRUTH) == Confusion(tp=3, fp=2, tn=6, fn=1)


def test_every_metric_of_the_example_by_hand() -> None:
    m = vessel_metrics(PRED, TRUTH)
    assert set(m) == set(METRIC_NAMES)
    assert m["f1"] == pytest.approx(2 / 3)  # 2*3 / (2*3 + 2 + 1) = 6/9
    assert m["jaccard"] == pytest.approx(0.5)  # 3 / (3 + 2 + 1)
    assert m["precision"] == pytest.approx(0.6)  # 3 / 5
    assert m["recall"] == pytest.approx(0.75)  # 3 / 4
    assert m["specificity"] == pytest.approx(0.75)  # 6 / 8
    assert m["accuracy"] == pytest.approx(0.75)  # 9 / 12
    # chance agreement pe = (5*4 + 7*8) / 144 = 76/144; kappa = (108 - 76) / (144 - 76) = 8/17
    assert m["kappa"] == pytest.approx(8 / 17)
    # mcc = (3*6 - 2*1) / sqrt(5 * 4 * 8 * 7) = 16 / sqrt(1120)
    assert m["mcc"] == pytest.approx(16 / np.sqrt(1120))
    # a bool prediction ranks pixels by 0/1: AUC = (recall + specificity) / 2
    assert m["auc"] == pytest.approx(0.75)
    assert dice(PRED, TRUTH) == pytest.approx(m["f1"])


def test_fov_restricts_every_count() -> None:
    fov = np.ones_like(TRUTH)
    fov[:, 3] = False  # drops (0,3) tn, (1,3) tn, (2,3) tp
    assert confusion(PRED, TRUTH, fov) == Confusion(tp=2, fp=2, tn=4, fn=1)
    m = vessel_metrics(PRED, TRUTH, fov)
    assert m["f1"] == pytest.approx(4 / 7)  # 2*2 / (4 + 2 + 1)
    assert m["accuracy"] == pytest.approx(6 / 9)
    outside_only = ~fov
    assert vessel_metrics(PRED & outside_only, TRUTH, fov) == vessel_metrics(np.zeros_like(PRED), TRUTH, fov)


def test_probability_map_is_thresholded_strictly_and_ranked_for_auc() -> None:
    prob = np.where(PRED, 0.8, 0.2)
    prob[0, 1] = 0.5  # the missed vessel pixel: exactly at the threshold is not vessel
    m = vessel_metrics(prob, TRUTH, threshold=0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    # vessel scores 0.8 0.8 0.8 0.5; background 0.8 0.8 and six 0.2. Pairs won: each 0.8 beats six
    # and ties two (3 * 7), the 0.5 beats six: (21 + 6) / (4 * 8) = 27/32
    assert m["auc"] == pytest.approx(27 / 32)
    assert vessel_metrics(prob, TRUTH, threshold=0.4)["recall"] == pytest.approx(1.0)


def test_auc_with_ties_by_hand() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.5, 0.2])
    truth = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)
    # 0.9 beats all four background pixels (4); each 0.5 ties two and beats two (3): 10 / 12
    assert auc(scores, truth) == pytest.approx(10 / 12)


def test_auc_against_brute_force_pair_count() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(9, 11)) / 4.0  # five levels: many ties
    truth = rng.random((9, 11)) < 0.3
    fov = rng.random((9, 11)) < 0.8
    pos, neg = scores[truth & fov], scores[~truth & fov]
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    assert auc(scores, truth, fov) == pytest.approx(np.mean(pairs))
    assert vessel_metrics(scores, truth, fov)["auc"] == pytest.approx(np.mean(pairs))


def test_perfect_and_inverted_predictions() -> None:
    perfect = vessel_metrics(TRUTH.astype(np.float32), TRUTH)
    assert all(v == pytest.approx(1.0) for v in perfect.values())
    inverted = vessel_metrics(1.0 - TRUTH.astype(np.float32), TRUTH)
    for name in ("f1", "jaccard", "precision", "recall", "specificity", "accuracy", "auc"):
        assert inverted[name] == pytest.approx(0.0), name
    assert inverted["mcc"] == pytest.approx(-1.0)
    # po = 0; pe = (8*4 + 4*8) / 144 = 64/144; kappa = -pe / (1 - pe) = -64/80
    assert inverted["kappa"] == pytest.approx(-0.8)


def test_empty_and_full_masks_follow_the_conventions() -> None:
    empty, full = np.zeros((3, 4), bool), np.ones((3, 4), bool)
    for pred, truth in ((empty, empty), (full, full)):  # equal everywhere: every metric is 1
        assert all(v == 1.0 for v in vessel_metrics(pred, truth).values())
    assert dice(empty, empty) == 1.0
    missed = vessel_metrics(empty, TRUTH)  # nothing predicted: tp = fp = 0, fn = 4, tn = 8
    assert missed["precision"] == 0.0 and missed["recall"] == 0.0 and missed["f1"] == 0.0
    assert missed["mcc"] == 0.0 and missed["kappa"] == 0.0 and missed["specificity"] == 1.0
    assert missed["auc"] == pytest.approx(0.5)  # constant scores: every pair ties
    false_alarm = vessel_metrics(PRED, empty)  # one class in the truth: AUC undefined -> 0 (not perfect)
    assert false_alarm["auc"] == 0.0 and false_alarm["recall"] == 0.0 and false_alarm["f1"] == 0.0
    assert false_alarm["specificity"] == pytest.approx(7 / 12)
    assert vessel_metrics(PRED, TRUTH, np.zeros_like(TRUTH))["f1"] == 1.0  # empty FOV: nothing to get wrong
    assert not any(np.isnan(v) for v in [*missed.values(), *false_alarm.values()])


def test_dice_basic_cases() -> None:
    a = np.array([[1, 1, 0, 0]], bool)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(a, np.array([[1, 0, 0, 0]], bool)) == pytest.approx(2 / 3)
    assert dice(a, ~a, fov=np.array([[1, 0, 0, 0]], bool)) == 0.0  # a vessel there, none predicted


def test_threshold_metrics_handle_large_counts() -> None:
    m = threshold_metrics(Confusion(tp=10**9, fp=10**9, tn=10**9, fn=10**9))
    assert m["mcc"] == pytest.approx(0.0) and m["kappa"] == pytest.approx(0.0) and m["f1"] == pytest.approx(0.5)


def test_mismatched_shapes_and_one_class_auc_are_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion(PRED, TRUTH[:2])
    with pytest.raises(ValueError, match="both classes"):
        auc(np.zeros((2, 2)), np.zeros((2, 2), bool))
