"""Metrics against hand-computed values, the empty-mask conventions, and MONAI's HD95."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvisionllama.evaluation.metrics import (
    STATUSES,
    SegmentationMetrics,
    case_metrics,
    confusion_counts,
    foreground_dice,
    hd95,
    hd95_with_status,
    score_case,
    scores_from_counts,
    scores_with_status,
    status_counts,
    worst_case_distance,
)


def _masks():
    label = np.zeros((4, 4, 3), dtype=np.uint8)
    pred = np.zeros_like(label)
    label[0, 0:4, 0] = 1  # 4 voxels
    pred[0, 0:2, 0] = 1  # 2 of them ...
    pred[3, 3, 2] = 1  # ... and one false positive
    return pred, label


def test_confusion_and_scores_by_hand():
    pred, label = _masks()
    counts = confusion_counts(pred, label, [1])
    assert counts.tolist() == [[2, 1, 2, 48 - 5]]
    s = scores_from_counts(counts)
    assert s["dice"][0] == pytest.approx(4 / 7)
    assert s["jaccard"][0] == pytest.approx(2 / 5)
    assert s["precision"][0] == pytest.approx(2 / 3)
    assert s["recall"][0] == pytest.approx(1 / 2)
    assert s["accuracy"][0] == pytest.approx(45 / 48)


def test_multiclass_counts():
    label = np.array([[[0, 1, 2, 2]]])
    pred = np.array([[[0, 2, 2, 1]]])
    counts = confusion_counts(pred, label, [1, 2])
    assert counts.tolist() == [[0, 1, 1, 2], [1, 1, 1, 1]]


# 4 x 4 x 3 grid with spacing (1, 1, 1): HD95's worst case is its diagonal sqrt(16 + 16 + 9)
DIAGONAL = math.sqrt(4**2 + 4**2 + 3**2)
OVERLAP = ("dice", "jaccard", "precision", "recall")


@pytest.mark.parametrize(
    "pred_on, label_on, expected, status",
    [
        # both empty (correct rejection): best values, status "empty"
        (False, False, dict(dice=1.0, jaccard=1.0, precision=1.0, recall=1.0, accuracy=1.0, hd95=0.0), "empty"),
        # false alarm on an empty reference: worst values (recall and HD95 substituted)
        (True, False, dict(dice=0.0, jaccard=0.0, precision=0.0, recall=0.0, accuracy=47 / 48, hd95=DIAGONAL), "penalised"),
        # miss: worst values (precision and HD95 substituted)
        (False, True, dict(dice=0.0, jaccard=0.0, precision=0.0, recall=0.0, accuracy=47 / 48, hd95=DIAGONAL), "penalised"),
        # both present, disjoint: the formulas (Dice 0, a finite HD95 below the diagonal)
        (True, True, dict(dice=0.0, jaccard=0.0, precision=0.0, recall=0.0, accuracy=46 / 48, hd95=math.sqrt(3)), "defined"),
    ],
)
def test_empty_conventions(pred_on, label_on, expected, status):
    pred = np.zeros((4, 4, 3), dtype=np.uint8)
    label = np.zeros_like(pred)
    pred[1, 1, 1] = pred_on
    label[2, 2, 2] = label_on
    got = case_metrics(pred, label, [1], spacing=(1.0, 1.0, 1.0))[1]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
        assert not math.isnan(got[name]), name
    for name in (*OVERLAP, "hd95"):
        assert got[f"{name}_status"] == status, name
    assert got["accuracy_status"] == ("empty" if status == "empty" else "defined")
    # the formulas alone still say where a denominator vanishes
    raw = scores_from_counts(confusion_counts(pred, label, [1]))
    assert math.isnan(raw["precision"][0]) == (not pred_on)
    assert math.isnan(raw["recall"][0]) == (not label_on)


def test_worst_case_hd95_is_the_image_diagonal_in_mm():
    shape, spacing = (20, 16, 7), (0.8, 1.25, 3.0)
    diagonal = math.sqrt((20 * 0.8) ** 2 + (16 * 1.25) ** 2 + (7 * 3.0) ** 2)
    assert worst_case_distance(shape, spacing) == pytest.approx(diagonal)
    assert worst_case_distance(shape) == pytest.approx(math.sqrt(20**2 + 16**2 + 7**2))
    label = np.zeros(shape, dtype=np.uint8)
    label[5:9, 4:8, 2:4] = 1
    empty = np.zeros_like(label)
    for pred, gt in ((empty, label), (label, empty)):  # a miss and a false alarm
        value, status = hd95_with_status(pred == 1, gt == 1, spacing)
        assert (value, status) == (pytest.approx(diagonal), "penalised")
        assert case_metrics(pred, gt, [1], spacing)[1]["hd95"] == pytest.approx(diagonal)
    # spacing respected: the same masks on a finer grid get a smaller worst case
    assert case_metrics(empty, label, [1], (0.4, 0.625, 1.5))[1]["hd95"] == pytest.approx(diagonal / 2)
    # strictly worse than the farthest possible prediction: one voxel in the opposite corner
    corner, far = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    corner[0, 0, 0], far[-1, -1, -1] = True, True
    assert hd95(corner, far, spacing) < diagonal
    assert hd95_with_status(empty == 1, empty == 1, spacing) == (0.0, "empty")
    with pytest.raises(ValueError, match="one value per axis"):
        worst_case_distance(shape, (1.0, 1.0))


def _blob_case(shape=(24, 20, 10)):
    """A reference with class 1 (a box) and class 2 (a smaller box)."""
    label = np.zeros(shape, dtype=np.uint8)
    label[4:14, 3:12, 2:8] = 1
    label[17:21, 14:18, 3:7] = 2
    return label


def _partial_finds(label):
    """Predictions that each find part of class 1 (and keep class 2 as it is)."""
    finds = {}
    subset = np.where(label == 1, 0, label)
    subset[4:7, 3:6, 2:4] = 1  # a corner of the box, no false positives
    finds["subset"] = subset
    shifted = np.where(label == 1, 0, label)
    shifted[7:17, 6:15, 2:8] = np.where(label[7:17, 6:15, 2:8] == 2, 2, 1)  # overlapping, many false positives
    finds["shifted"] = shifted
    speck = np.where(label == 1, 0, label)
    speck[13, 11, 7] = 1  # one voxel of it
    speck[0:3, 0:20, 0:10] = 1  # and a large false-positive slab at the edge
    finds["speck_and_slab"] = speck
    return finds


HIGHER_IS_BETTER = {"dice": True, "jaccard": True, "precision": True, "recall": True, "accuracy": True, "hd95": False}


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.9, 4.0)])
def test_a_miss_never_beats_a_partial_find(spacing):
    label = _blob_case()
    miss = np.where(label == 1, 0, label)  # class 1 predicted nowhere, class 2 perfect
    missed = case_metrics(miss, label, [1, 2], spacing)
    assert all(missed[1][f"{m}_status"] == "penalised" for m in (*OVERLAP, "hd95"))
    for name, found in _partial_finds(label).items():
        got = case_metrics(found, label, [1, 2], spacing)
        assert got[1]["hd95_status"] == "defined", name
        counts = confusion_counts(found, label, [1])[0]
        for metric, higher in HIGHER_IS_BETTER.items():
            if metric == "accuracy" and counts[0] <= counts[1]:
                # accuracy counts voxels: more false positives than found voxels lose to an empty
                # prediction (documented exception); the other metrics carry the miss
                assert got[1]["accuracy"] <= missed[1]["accuracy"], name
                continue
            if higher:
                assert got[1][metric] > missed[1][metric], (name, metric)
            else:
                assert got[1][metric] < missed[1][metric], (name, metric)

    # the same holds for the means over cases: model A misses class 1 in one of two cases,
    # model B finds part of it there; both are identical on the other case
    partial = _partial_finds(label)["subset"]
    a, b = SegmentationMetrics({1: "big", 2: "small"}), SegmentationMetrics({1: "big", 2: "small"})
    a.update("c0", miss, label, spacing)
    b.update("c0", partial, label, spacing)
    for m in (a, b):
        m.update("c1", label, label, spacing)
    agg_a, agg_b = a.aggregate(), b.aggregate()
    for metric, higher in HIGHER_IS_BETTER.items():
        for key in ("big", "mean"):
            worse, better = agg_a[key][metric], agg_b[key][metric]
            assert (better > worse) if higher else (better < worse), (key, metric)
    assert agg_a["big"]["n_hd95_penalised"] == 1 and agg_b["big"]["n_hd95_penalised"] == 0
    assert agg_a["big"]["n_hd95"] == 2  # the miss is counted, not dropped


def test_a_false_alarm_never_beats_a_correct_rejection():
    label = _blob_case()
    alarm = label.copy()
    alarm[0:2, 0:2, 0:2] = 3  # class 3 is absent from the reference
    rejected = case_metrics(label, label, [3], (1.0, 1.0, 2.0))[3]
    alarmed = case_metrics(alarm, label, [3], (1.0, 1.0, 2.0))[3]
    for metric, higher in HIGHER_IS_BETTER.items():
        assert (rejected[metric] > alarmed[metric]) if higher else (rejected[metric] < alarmed[metric]), metric
    assert rejected["dice_status"] == "empty" and alarmed["dice_status"] == "penalised"


def test_hd95_anisotropic_by_hand():
    a = np.zeros((3, 3, 5), dtype=bool)
    b = np.zeros_like(a)
    a[1, 1, 0] = True
    b[1, 1, 2] = True  # two slices away along z
    assert hd95(a, b, spacing=(1.0, 1.0, 2.5)) == pytest.approx(5.0)
    assert hd95(a, b, spacing=(0.5, 0.5, 1.0)) == pytest.approx(2.0)
    assert hd95(a, b) == pytest.approx(2.0)
    # a shift along x is measured with x's spacing
    c = np.zeros_like(a)
    c[0, 1, 0] = True
    assert hd95(a, c, spacing=(0.7, 1.0, 2.5)) == pytest.approx(0.7)
    assert hd95(a, a, spacing=(0.7, 1.0, 2.5)) == 0.0


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_hd95_matches_monai():
    from monai.metrics import compute_hausdorff_distance

    rng = np.random.default_rng(0)
    for trial in range(3):
        label = np.zeros((14, 12, 9), dtype=bool)
        label[3:10, 2:9, 1:7] = True
        pred = np.roll(label, shift=(1, -1, 1), axis=(0, 1, 2)) ^ (rng.random(label.shape) > 0.93)
        if trial == 2:  # a mask touching the image border
            pred[0:3, :, 0] = True
        spacing = (0.8, 1.3, 3.0)
        ours = hd95(pred, label, spacing)
        theirs = compute_hausdorff_distance(
            torch.from_numpy(pred)[None, None], torch.from_numpy(label)[None, None],
            include_background=True, percentile=95, spacing=spacing,
        ).item()
        assert ours == pytest.approx(theirs, rel=1e-5)


def test_foreground_dice_torch():
    label = torch.tensor([[0, 1, 1, 2], [0, 0, 0, 0]])
    pred = torch.tensor([[0, 1, 2, 2], [0, 0, 0, 1]])
    d = foreground_dice(pred, label, num_classes=3)
    assert d[0, 0].item() == pytest.approx(2 / 3)
    assert d[0, 1].item() == pytest.approx(2 / 3)
    assert d[1, 0].item() == 0.0  # false positive on an empty class
    assert math.isnan(d[1, 1].item())  # both empty


def test_score_case_values_and_statuses():
    label = _blob_case()
    pred = np.where(label == 2, 0, label)  # class 2 missed
    scores = score_case(pred, label, [1, 2, 3], spacing=(1.0, 1.0, 2.0))
    assert scores.classes == (1, 2, 3)
    assert scores.statuses["dice"].tolist() == ["defined", "penalised", "empty"]
    assert scores.statuses["accuracy"].tolist() == ["defined", "defined", "empty"]
    assert scores.values["dice"].tolist() == [1.0, 0.0, 1.0]
    assert scores.values["hd95"][1] == pytest.approx(worst_case_distance(label.shape, (1.0, 1.0, 2.0)))
    skipped = score_case(pred, label, [1], with_hd95=False)
    assert math.isnan(skipped.values["hd95"][0]) and skipped.statuses["hd95"].tolist() == ["skipped"]
    values, statuses = scores_with_status(np.array([[[3, 0, 0, 5], [0, 0, 0, 8]]]))  # (1, 2, 4)
    assert values["dice"].shape == (1, 2) and statuses["recall"].tolist() == [["defined", "empty"]]


def test_accumulator_aggregate_and_reset():
    m = SegmentationMetrics({1: "a", 2: "b"})
    pred, label = _masks()
    m.update("x", pred, label, spacing=(1, 1, 1))
    m.update("y", label, label, spacing=(1, 1, 1))
    agg = m.aggregate()
    assert agg["a"]["dice"] == pytest.approx((4 / 7 + 1) / 2)
    assert agg["b"]["dice"] == 1.0 and agg["b"]["n_dice"] == 2  # class b empty in both: correct rejections
    assert agg["b"]["n_dice_empty"] == 2 and agg["a"]["n_dice_defined"] == 2
    assert agg["a"]["n_hd95_penalised"] == 0 and agg["mean"]["n_dice_empty"] == 2
    assert agg["mean"]["dice"] == pytest.approx((agg["a"]["dice"] + 1.0) / 2)
    assert {r["case_id"] for r in m.rows} == {"x", "y"} and len(m.rows) == 4
    assert {r["hd95_status"] for r in m.rows} == {"defined", "empty"}
    m.reset()
    assert m.rows == []
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetrics({})


def test_status_counts():
    assert status_counts(["defined", "penalised", "defined", "empty"]) == {
        "defined": 2, "penalised": 1, "empty": 1, "skipped": 0,
    }
    assert tuple(status_counts([])) == STATUSES
    with pytest.raises(ValueError, match="unknown metric status 'nan'"):
        status_counts(["nan"])
