"""Segmentation metrics: a functional core and a small accumulator (as MONAI's metrics are built).

The paper (Section 4.2) scores Dice, Jaccard, precision, recall, accuracy and HD95. Every metric
here is computed per case and per foreground class from a label map (one integer class per voxel),
on the grid the caller passes: evaluation passes the ORIGINAL image grid and its voxel spacing, so
HD95 is in millimetres.

Definitions, for one class c with the voxel counts TP, FP, FN, TN of ``pred == c`` vs
``label == c`` (N = TP + FP + FN + TN):

===========  =========================  ===========  ===========  ==============  ==============
metric       formula                    both empty   GT empty,    GT non-empty,   reference
                                                     pred not     pred empty
===========  =========================  ===========  ===========  ==============  ==============
dice         2TP / (2TP + FP + FN)      NaN          0            0               Dice 1945
jaccard      TP / (TP + FP + FN)        NaN          0            0               Jaccard 1912
precision    TP / (TP + FP)             NaN          0            NaN             TP/(TP+FP)
recall       TP / (TP + FN)             NaN          NaN          0               TP/(TP+FN)
accuracy     (TP + TN) / N              1            < 1          < 1             always defined
hd95         see :func:`hd95`           NaN          NaN          NaN             MONAI
===========  =========================  ===========  ===========  ==============  ==============

The rule is one sentence: **a metric is NaN exactly where its denominator is zero** (HD95: where
either surface is empty), and aggregation takes ``nanmean`` over cases and reports how many cases
were defined. This is nnU-Net's convention for Dice ("NaN if the class is absent from both") and
MONAI's ``ignore_empty=True`` where the ground truth is empty and the prediction is empty too; a
false-positive prediction on an empty ground truth scores Dice 0 (it is not hidden as NaN, unlike
MONAI's ``ignore_empty=True``). HD95 is NaN whenever either mask is empty — MONAI gives NaN or inf
there and warns; no finite fallback (such as the image diagonal) is invented, so a mean HD95 is
over the cases where both masks have foreground.

HD95 (Huttenlocher et al. 1993; 95th percentile as in MONAI's ``compute_hausdorff_distance(...,
percentile=95)``): surface voxels are the mask voxels with a face neighbour outside the mask
(voxels on the image border count as surface); the directed distances from each surface voxel of
one mask to the nearest surface voxel of the other are measured in millimetres with the voxel
spacing; HD95 is the larger of the two directed 95th percentiles (linear interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from medvisionllama.vocabulary import METRIC_NAMES  # the metrics of one case and class, metrics.csv's order


# ------------------------------------------------------------------------------ functional core
def confusion_counts(pred: np.ndarray, label: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Voxel counts ``(TP, FP, FN, TN)`` of each class in ``classes``: an int64 array (K, 4).

    ``pred`` and ``label`` are integer label maps of the same shape (any number of dimensions).
    """
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"pred shape {pred.shape} differs from label shape {label.shape}")
    n = pred.size
    out = np.zeros((len(classes), 4), dtype=np.int64)
    for i, c in enumerate(classes):
        p, g = pred == c, label == c
        tp = int(np.count_nonzero(p & g))
        fp = int(np.count_nonzero(p)) - tp
        fn = int(np.count_nonzero(g)) - tp
        out[i] = (tp, fp, fn, n - tp - fp - fn)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def scores_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Dice, Jaccard, precision, recall and accuracy from counts ``(..., 4)`` = (TP, FP, FN, TN).

    Each value is NaN where its denominator is zero (see the module docstring's table).
    """
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn, tn = (counts[..., i] for i in range(4))
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "jaccard": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (outside the array counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between two binary masks, in spacing units.

    ``spacing`` is the voxel size per axis (mm); ``None`` means 1. NaN when either mask is empty.
    Matches MONAI's ``compute_hausdorff_distance(..., percentile=95, spacing=spacing)`` on
    non-empty masks; the masks are first cropped to their joint bounding box (plus one voxel of
    zero padding), which changes no distance because every surface voxel lies inside it.
    """
    pred, label = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    if pred.shape != label.shape:
        raise ValueError(f"pred shape {pred.shape} differs from label shape {label.shape}")
    if not pred.any() or not label.any():
        return float("nan")
    spacing = (1.0,) * pred.ndim if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not have one value per axis of shape {pred.shape}")
    # crop to the joint bounding box, padded with one background voxel on each side
    either = pred | label
    lo = [int(np.flatnonzero(either.any(axis=tuple(j for j in range(pred.ndim) if j != i))).min()) for i in range(pred.ndim)]
    hi = [int(np.flatnonzero(either.any(axis=tuple(j for j in range(pred.ndim) if j != i))).max()) + 1 for i in range(pred.ndim)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    pred_s, label_s = _surface(np.pad(pred[box], 1)), _surface(np.pad(label[box], 1))
    # distance of every voxel to the nearest surface voxel of the other mask (mm)
    to_label = ndimage.distance_transform_edt(~label_s, sampling=spacing)[pred_s]
    to_pred = ndimage.distance_transform_edt(~pred_s, sampling=spacing)[label_s]
    return float(max(np.percentile(to_label, 95), np.percentile(to_pred, 95)))


def case_metrics(
    pred: np.ndarray,
    label: np.ndarray,
    classes: Sequence[int],
    spacing: Sequence[float] | None = None,
    *,
    with_hd95: bool = True,
) -> dict[int, dict[str, float]]:
    """All metrics of one case: ``{class_index: {metric: value}}`` for each class in ``classes``."""
    counts = confusion_counts(pred, label, classes)
    scores = scores_from_counts(counts)
    out: dict[int, dict[str, float]] = {}
    for i, c in enumerate(classes):
        row = {name: float(scores[name][i]) for name in scores}
        row["hd95"] = hd95(pred == c, label == c, spacing) if with_hd95 else float("nan")
        out[int(c)] = row
    return out


def foreground_dice(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-case Dice of each foreground class: a float tensor (B, num_classes - 1), NaN where undefined.

    ``pred`` and ``label`` are integer label maps (B, X, Y, Z) (e.g. ``logits.argmax(1)``). Used for
    the training curves; same convention as :func:`scores_from_counts`.
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
    b = pred.shape[0]
    pred, label = pred.reshape(b, -1), label.reshape(b, -1)
    out = torch.full((b, max(num_classes - 1, 0)), float("nan"), dtype=torch.float64)
    for c in range(1, num_classes):
        p, g = pred == c, label == c
        tp = (p & g).sum(1).double()
        den = p.sum(1).double() + g.sum(1).double()
        out[:, c - 1] = torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.full_like(den, float("nan")))
    return out


# ------------------------------------------------------------------------------ accumulator
class SegmentationMetrics:
    """Accumulates per-case, per-class metrics; ``aggregate()`` gives the per-class means.

    >>> m = SegmentationMetrics(class_names={1: "tumour"})
    >>> m.update("case_0", pred, label, spacing=(1.0, 1.0, 2.5))   # doctest: +SKIP
    >>> m.aggregate()["tumour"]["dice"]                              # doctest: +SKIP
    """

    def __init__(self, class_names: dict[int, str], *, with_hd95: bool = True) -> None:
        if not class_names or any(int(c) < 0 for c in class_names):
            raise ValueError(f"class_names must map class indices >= 0 to names, got {class_names!r}")
        self.class_names = {int(c): str(n) for c, n in class_names.items()}
        self.with_hd95 = with_hd95
        self.rows: list[dict[str, object]] = []

    def update(
        self,
        case_id: str,
        pred: np.ndarray,
        label: np.ndarray,
        spacing: Sequence[float] | None = None,
    ) -> list[dict[str, object]]:
        """Score one case; returns (and keeps) one row per class: case_id, class_index, class_name, metrics."""
        per_class = case_metrics(pred, label, list(self.class_names), spacing, with_hd95=self.with_hd95)
        rows = [
            {"case_id": case_id, "class_index": c, "class_name": self.class_names[c], **values}
            for c, values in per_class.items()
        ]
        self.rows.extend(rows)
        return rows

    def aggregate(self) -> dict[str, dict[str, float]]:
        """``{class_name: {metric: nanmean over cases, "n_<metric>": defined cases}}``, plus ``"mean"``
        (the nanmean over classes of the per-class means)."""
        out: dict[str, dict[str, float]] = {}
        for c, name in self.class_names.items():
            rows = [r for r in self.rows if r["class_index"] == c]
            out[name] = {}
            for metric in METRIC_NAMES:
                values = np.array([r[metric] for r in rows], dtype=np.float64)
                defined = values[~np.isnan(values)]
                out[name][metric] = float(defined.mean()) if defined.size else float("nan")
                out[name][f"n_{metric}"] = float(defined.size)
        means = {}
        for metric in METRIC_NAMES:
            values = np.array([out[n][metric] for n in self.class_names.values()])
            means[metric] = float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")
        out["mean"] = means
        return out

    def reset(self) -> None:
        """Forget all cases."""
        self.rows = []
