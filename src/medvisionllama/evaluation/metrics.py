"""Segmentation metrics: a functional core and a small accumulator (as MONAI's metrics are built).

The paper (Section 4.2) scores Dice, Jaccard, precision, recall, accuracy and HD95. Every metric
here is computed per case and per foreground class from a label map (one integer class per voxel),
on the grid the caller passes: evaluation passes the ORIGINAL image grid and its voxel spacing, so
HD95 is in millimetres.

Formulas, for one class c with the voxel counts TP, FP, FN, TN of ``pred == c`` vs ``label == c``
(N = TP + FP + FN + TN): Dice 2TP / (2TP + FP + FN) (Dice 1945), Jaccard TP / (TP + FP + FN)
(Jaccard 1912), precision TP / (TP + FP), recall TP / (TP + FN), accuracy (TP + TN) / N, and HD95
(see :func:`hd95`). :func:`scores_from_counts` and :func:`hd95` give the formulas alone, NaN where
a denominator or a surface is empty.

Conventions for empty masks (:func:`score_case`, used by :func:`case_metrics` and
:class:`SegmentationMetrics`). A value is never NaN (except HD95 when it is not computed), and
each comes with a status:

- ``defined``: both masks have foreground; the formula's value.
- ``penalised``: exactly one mask is empty, a miss (reference present, prediction empty) or a
  false alarm (reference empty, prediction present); the metric's WORST value, whether the
  formula gives it (Dice of a miss is 0) or it is substituted (precision of a miss, recall of a
  false alarm, HD95 of both).
- ``empty``: both masks are empty, a correct rejection; the metric's BEST value.
- ``skipped``: HD95 only, not computed (``with_hd95=False``); NaN.

===========  =================  =================  =================  ==========================
metric       both present       reference present  reference empty,   both empty
             (``defined``)      prediction empty   prediction present (``empty``)
                                (miss)             (false alarm)
===========  =================  =================  =================  ==========================
dice         formula            0                  0                  1
jaccard      formula            0                  0                  1
precision    formula            0 (substituted)    0                  1
recall       formula            0                  0 (substituted)    1
accuracy     formula            formula            formula            1 (formula)
hd95         MONAI, mm          D (substituted)    D (substituted)    0
===========  =================  =================  =================  ==========================

D is the worst case of HD95: the diagonal of the image in millimetres on the grid evaluated,
``sqrt(sum((shape * spacing) ** 2))`` (:func:`worst_case_distance`). It is strictly larger than
any HD95 of two non-empty masks on that grid (their distances are between voxel centres, at most
``sqrt(sum(((shape - 1) * spacing) ** 2))``), so a miss always has a worse HD95 than any
prediction that puts some of the class somewhere, however far from the reference.

Sources. The BraTS challenges score a class that is empty in both masks as Dice 1 and HD95 0, and
a class that is empty in exactly one as Dice 0 and HD95 373.13 mm, the diagonal of their
240 × 240 × 155 grid of 1 mm voxels (the value of BraTS evaluation code; BraTS
2023's lesion-wise evaluation penalises every missed and every false-positive lesion with Dice 0
and HD95 374 mm, github.com/rachitsaluja/brats_val_2023). D generalises that value to each image's
grid and spacing. Metrics Reloaded (Maier-Hein et al., Nature Methods 21:195-212, 2024; the
pitfalls in Reinke et al., Nature Methods 2024) asks that empty references and empty predictions
be handled by a rule fixed in advance and reported with the results. A rule that drops the
undefined values of failed cases from an aggregate rewards the failure; a worst-case value for a
miss, as here, does not. The statuses let every aggregate report how many of its cases were
penalised or empty.

Accuracy is the exception to "a miss never beats a partial find": it counts voxels, so a
prediction with more false-positive voxels than found voxels has a lower accuracy than an empty
one. Accuracy keeps its formula (the paper's metric); its status is ``defined`` unless both masks
are empty, and the overlap scores and HD95 carry the miss.

Before this convention (until issue 10) every metric was NaN where its denominator vanished and
aggregates used ``nanmean``, so a model that predicted nothing for a present class had no HD95 at
all and could look better than one that found part of it.

HD95 (Huttenlocher et al. 1993; 95th percentile as in MONAI's ``compute_hausdorff_distance(...,
percentile=95)``): surface voxels are the mask voxels with a face neighbour outside the mask
(voxels on the image border count as surface); the directed distances from each surface voxel of
one mask to the nearest surface voxel of the other are measured in millimetres with the voxel
spacing; HD95 is the larger of the two directed 95th percentiles (linear interpolation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from medvisionllama.vocabulary import METRIC_NAMES  # the metrics of one case and class, metrics.csv's order

#: statuses of a metric value (module docstring): formula, worst case for a miss or a false
#: alarm, best value for a correct rejection, not computed
DEFINED, PENALISED, EMPTY, SKIPPED = "defined", "penalised", "empty", "skipped"
STATUSES: tuple[str, ...] = (DEFINED, PENALISED, EMPTY, SKIPPED)

#: the overlap scores' value for a miss or a false alarm (worst) and for a correct rejection (best)
_WORST_SCORE, _BEST_SCORE = 0.0, 1.0


def status_column(metric: str) -> str:
    """The name of ``metric``'s status field in rows and tables: ``<metric>_status``."""
    return f"{metric}_status"


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
    """The formulas alone: Dice, Jaccard, precision, recall and accuracy from counts ``(..., 4)`` =
    (TP, FP, FN, TN), each an array ``(...)``, NaN where its denominator is zero.

    :func:`scores_with_status` applies the conventions for empty masks on top of this.
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


def emptiness_status(counts: np.ndarray) -> np.ndarray:
    """Status of each class from counts ``(..., 4)``: ``defined`` (both masks have foreground),
    ``penalised`` (exactly one is empty) or ``empty`` (both are): a str array ``(...)``."""
    counts = np.asarray(counts)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    pred_empty, label_empty = (tp + fp) == 0, (tp + fn) == 0
    out = np.full(tp.shape, DEFINED, dtype=object)
    out[pred_empty != label_empty] = PENALISED
    out[pred_empty & label_empty] = EMPTY
    return out.astype(str)


def scores_with_status(counts: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Dice, Jaccard, precision, recall and accuracy with the module's conventions for empty masks.

    Args:
        counts: ``(..., 4)`` voxel counts (TP, FP, FN, TN), e.g. from :func:`confusion_counts`.

    Returns:
        ``(values, statuses)``: metric -> float64 array ``(...)`` (never NaN) and metric -> str
        array ``(...)`` of :data:`STATUSES` (see the table in the module docstring).
    """
    values = scores_from_counts(counts)
    status = emptiness_status(counts)
    statuses: dict[str, np.ndarray] = {}
    for name, value in values.items():
        if name == "accuracy":  # N > 0: always its formula; ``empty`` only marks a correct rejection
            statuses[name] = np.where(status == EMPTY, EMPTY, DEFINED)
            continue
        value = np.where(status == PENALISED, _WORST_SCORE, value)
        values[name] = np.where(status == EMPTY, _BEST_SCORE, value)
        statuses[name] = status.copy()
    return values, statuses


def worst_case_distance(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """HD95's worst case: the image diagonal ``sqrt(sum((shape * spacing) ** 2))`` (mm with the
    spacing in mm), larger than any distance between two voxel centres of the grid."""
    shape = tuple(int(n) for n in shape)
    spacing = (1.0,) * len(shape) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != len(shape):
        raise ValueError(f"spacing {spacing} does not have one value per axis of shape {shape}")
    if any(s <= 0 for s in spacing):
        raise ValueError(f"spacing {spacing} must be positive")
    return float(np.sqrt(np.sum((np.array(shape, dtype=np.float64) * np.array(spacing)) ** 2)))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (outside the array counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between two binary masks, in spacing units.

    ``spacing`` is the voxel size per axis (mm); ``None`` means 1. NaN when either mask is empty
    (the distance alone; :func:`hd95_with_status` applies the conventions). Matches MONAI's
    ``compute_hausdorff_distance(..., percentile=95, spacing=spacing)`` on non-empty masks; the
    masks are first cropped to their joint bounding box (plus one voxel of zero padding), which
    changes no distance because every surface voxel lies inside it.
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


def hd95_with_status(
    pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[float, str]:
    """``(HD95, status)`` of two binary masks with the conventions: both empty -> ``(0, "empty")``;
    exactly one empty -> ``(worst_case_distance(shape, spacing), "penalised")``; else
    ``(hd95(...), "defined")``. In spacing units (mm)."""
    pred, label = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    if pred.shape != label.shape:
        raise ValueError(f"pred shape {pred.shape} differs from label shape {label.shape}")
    worst = worst_case_distance(pred.shape, spacing)  # also checks the spacing
    has_pred, has_label = bool(pred.any()), bool(label.any())
    if not has_pred and not has_label:
        return 0.0, EMPTY
    if has_pred != has_label:
        return worst, PENALISED
    return hd95(pred, label, spacing), DEFINED


@dataclass(frozen=True)
class CaseScores:
    """All metrics of one case: for each metric a value and a status per class.

    Attributes:
        classes: the K class indices scored, in order.
        values: metric -> float64 array (K,) (NaN only for a ``skipped`` HD95).
        statuses: metric -> str array (K,) of :data:`STATUSES`.
    """

    classes: tuple[int, ...]
    values: dict[str, np.ndarray]
    statuses: dict[str, np.ndarray]

    def rows(self) -> dict[int, dict[str, float | str]]:
        """``{class_index: {metric: value, "<metric>_status": status}}`` (metrics in
        :data:`METRIC_NAMES` order, then the statuses in the same order)."""
        out: dict[int, dict[str, float | str]] = {}
        for i, c in enumerate(self.classes):
            row: dict[str, float | str] = {m: float(self.values[m][i]) for m in METRIC_NAMES}
            row.update({status_column(m): str(self.statuses[m][i]) for m in METRIC_NAMES})
            out[c] = row
        return out


def score_case(
    pred: np.ndarray,
    label: np.ndarray,
    classes: Sequence[int],
    spacing: Sequence[float] | None = None,
    *,
    with_hd95: bool = True,
) -> CaseScores:
    """The functional core: every metric of one case, with statuses, for each class in ``classes``.

    ``pred`` and ``label`` are integer label maps of the same shape (X, Y, Z) on the grid to score
    (the original grid in evaluation); ``spacing`` is its voxel size (mm), ``None`` meaning 1.
    HD95's worst case is the diagonal of that grid. ``with_hd95=False`` gives HD95 NaN, ``skipped``.
    """
    pred, label = np.asarray(pred), np.asarray(label)
    counts = confusion_counts(pred, label, classes)  # (K, 4)
    values, statuses = scores_with_status(counts)
    k = len(classes)
    if with_hd95:
        pairs = [hd95_with_status(pred == c, label == c, spacing) for c in classes]
        values["hd95"] = np.array([v for v, _ in pairs], dtype=np.float64).reshape(k)
        statuses["hd95"] = np.array([s for _, s in pairs], dtype=str).reshape(k)
    else:
        values["hd95"] = np.full(k, np.nan)
        statuses["hd95"] = np.full(k, SKIPPED).astype(str)
    return CaseScores(tuple(int(c) for c in classes), values, statuses)


def case_metrics(
    pred: np.ndarray,
    label: np.ndarray,
    classes: Sequence[int],
    spacing: Sequence[float] | None = None,
    *,
    with_hd95: bool = True,
) -> dict[int, dict[str, float | str]]:
    """All metrics of one case: ``{class_index: {metric: value, "<metric>_status": status}}`` for
    each class in ``classes`` (:func:`score_case` as plain dicts)."""
    return score_case(pred, label, classes, spacing, with_hd95=with_hd95).rows()


def status_counts(statuses: Iterable[str]) -> dict[str, int]:
    """How many of ``statuses`` are each of :data:`STATUSES`: ``{"defined": n, "penalised": n,
    "empty": n, "skipped": n}``; an unknown status raises ``ValueError``."""
    out = dict.fromkeys(STATUSES, 0)
    for status in statuses:
        if status not in out:
            raise ValueError(f"unknown metric status {status!r}; expected one of {STATUSES}")
        out[status] += 1
    return out


def foreground_dice(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-case Dice of each foreground class: a float tensor (B, num_classes - 1).

    ``pred`` and ``label`` are integer label maps (B, X, Y, Z) (e.g. ``logits.argmax(1)``). Used for
    the training curves only, with the formula's convention (:func:`scores_from_counts`): NaN where
    both masks are empty (callers take ``nanmean``), 0 for a miss or a false alarm, so a miss is
    never rewarded here either. Computed on ``pred``'s device (no host synchronisation).
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
    b = pred.shape[0]
    pred, label = pred.reshape(b, -1), label.reshape(b, -1)
    out = torch.full((b, max(num_classes - 1, 0)), float("nan"), dtype=torch.float64, device=pred.device)
    for c in range(1, num_classes):
        p, g = pred == c, label == c
        tp = (p & g).sum(1).double()
        den = p.sum(1).double() + g.sum(1).double()
        out[:, c - 1] = torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.full_like(den, float("nan")))
    return out


# ------------------------------------------------------------------------------ accumulator
class SegmentationMetrics:
    """Accumulates per-case, per-class metrics and their statuses; ``aggregate()`` gives the
    per-class means and how many cases were defined, penalised and empty.

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
        """Score one case; returns (and keeps) one row per class: case_id, class_index, class_name,
        the metrics of :data:`METRIC_NAMES`, then ``<metric>_status`` for each."""
        per_class = case_metrics(pred, label, list(self.class_names), spacing, with_hd95=self.with_hd95)
        rows = [
            {"case_id": case_id, "class_index": c, "class_name": self.class_names[c], **values}
            for c, values in per_class.items()
        ]
        self.rows.extend(rows)
        return rows

    def aggregate(self) -> dict[str, dict[str, float]]:
        """Per class ``{class_name: {metric: mean over cases, "n_<metric>": cases with a value,
        "n_<metric>_<status>": cases of each status}}``, plus ``"mean"``: the mean over classes of
        the per-class means and the status counts summed over classes.

        Means are over every case with a value (only a ``skipped`` HD95 has none), so a miss
        counts with its worst-case value."""
        out: dict[str, dict[str, float]] = {}
        for c, name in self.class_names.items():
            rows = [r for r in self.rows if r["class_index"] == c]
            out[name] = {}
            for metric in METRIC_NAMES:
                values = np.array([r[metric] for r in rows], dtype=np.float64)
                scored = values[~np.isnan(values)]
                out[name][metric] = float(scored.mean()) if scored.size else float("nan")
                out[name][f"n_{metric}"] = float(scored.size)
                counts = status_counts(str(r[status_column(metric)]) for r in rows)
                out[name].update({f"n_{metric}_{s}": float(n) for s, n in counts.items()})
        means: dict[str, float] = {}
        for metric in METRIC_NAMES:
            values = np.array([out[n][metric] for n in self.class_names.values()])
            means[metric] = float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")
            for s in STATUSES:
                means[f"n_{metric}_{s}"] = float(sum(out[n][f"n_{metric}_{s}"] for n in self.class_names.values()))
        out["mean"] = means
        return out

    def reset(self) -> None:
        """Forget all cases."""
        self.rows = []
