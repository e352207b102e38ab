"""Metrics against hand-computed values, the empty-mask conventions, and MONAI's HD95."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvisionllama.evaluation.metrics import (
    SegmentationMetrics,
    case_metrics,
    confusion_counts,
    foreground_dice,
    hd95,
    scores_from_counts,
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


@pytest.mark.parametrize(
    "pred_on, label_on, expected",
    [
        # both empty: undefined overlap scores, accuracy 1, HD95 NaN
        (False, False, dict(dice=math.nan, jaccard=math.nan, precision=math.nan, recall=math.nan, accuracy=1.0, hd95=math.nan)),
        # false positive on an empty ground truth: Dice 0 (not hidden), recall undefined
        (True, False, dict(dice=0.0, jaccard=0.0, precision=0.0, recall=math.nan, accuracy=47 / 48, hd95=math.nan)),
        # missed object: Dice 0, precision undefined
        (False, True, dict(dice=0.0, jaccard=0.0, precision=math.nan, recall=0.0, accuracy=47 / 48, hd95=math.nan)),
    ],
)
def test_empty_conventions(pred_on, label_on, expected):
    pred = np.zeros((4, 4, 3), dtype=np.uint8)
    label = np.zeros_like(pred)
    pred[1, 1, 1] = pred_on
    label[2, 2, 2] = label_on
    got = case_metrics(pred, label, [1], spacing=(1.0, 1.0, 1.0))[1]
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(value), name


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


def test_accumulator_aggregate_and_reset():
    m = SegmentationMetrics({1: "a", 2: "b"})
    pred, label = _masks()
    m.update("x", pred, label, spacing=(1, 1, 1))
    m.update("y", label, label, spacing=(1, 1, 1))
    agg = m.aggregate()
    assert agg["a"]["dice"] == pytest.approx((4 / 7 + 1) / 2)
    assert math.isnan(agg["b"]["dice"]) and agg["b"]["n_dice"] == 0
    assert agg["mean"]["dice"] == pytest.approx(agg["a"]["dice"])  # NaN class skipped
    assert {r["case_id"] for r in m.rows} == {"x", "y"} and len(m.rows) == 4
    m.reset()
    assert m.rows == []
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetrics({})
