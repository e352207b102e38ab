"""Appendix Figure 3, the paper's radar, redrawn two ways:

* :func:`figure_metric_dots` (the figure to read): small multiples, one panel per task and metric;
  one row per model with its mean and a 95 % bootstrap interval over the test cases (seeds
  pooled), the paper's value as an open diamond where it prints one. Each metric on its own
  axis, so none dominates and no axis order changes what is seen.
* :func:`figure_radar` (a look-alike of the paper's chart, kept as an appendix figure): fixed,
  stated ranges, one colour per model (:func:`model_style`), axis labels outside the polygons.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import matplotlib.lines
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.paper.figures import base
from medvisionllama.paper.figures.cases import METRIC_NAMES
from medvisionllama.paper.outputs.base import short_task
from medvisionllama.paper.published import model_label, model_style
from medvisionllama.vocabulary import PAPER_METRICS as METRICS

BOOTSTRAP_RESAMPLES = 2000


def mean_interval(values: np.ndarray, label: str, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` (NaN dropped) and its percentile-bootstrap interval, seeded by ``label``
    so the figure repeats byte for byte; one value: the interval is that value."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    means = rng.choice(v, size=(BOOTSTRAP_RESAMPLES, len(v)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(v.mean()), float(lo), float(hi)


@base.styled
def figure_metric_dots(scores: pd.DataFrame, models: Sequence[str], stem: str | Path, title: str,
                       published: pd.DataFrame | None = None, metrics: Sequence[str] = METRICS,
                       stamp: str | None = None) -> base.FigureOutput:
    """``scores``: per-case rows (``task, model, seed`` and the metrics) of one attention and size;
    ``published``: ``comparison_values`` rows for the paper's values (optional). One panel per
    task (row) and metric (column); per model a dot (mean) and a line (95 % bootstrap interval)."""
    missing = [c for c in ("task", "model", *metrics) if c not in scores.columns]
    if missing:
        raise InputError(f"{title}: the per-case scores lack columns {missing}")
    tasks = list(dict.fromkeys(scores["task"]))
    height = min(0.22 * len(models) + 0.45, (base.PAGE_INCHES[1] - 1.8) / len(tasks))
    fig, axes = plt.subplots(len(tasks), len(metrics), squeeze=False, sharey=True, layout="constrained",
                             figsize=(base.PAGE_INCHES[0], 1.0 + height * len(tasks)))
    y = np.arange(len(models))[::-1]
    for i, task in enumerate(tasks):
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            for k, model in enumerate(models):
                color, marker = model_style(model)
                values = scores.loc[(scores["task"] == task) & (scores["model"] == model), metric].to_numpy(dtype=float)
                mean, lo, hi = mean_interval(values, f"{task}|{model}|{metric}")
                ax.hlines(y[k], lo, hi, color=color, lw=1.4)
                ax.plot([mean], [y[k]], marker=marker, color=color, ms=4.5, ls="none")
                if published is not None:
                    p = published[(published["task"] == task) & (published["model"] == model)
                                  & (published["metric"] == metric)]["published_mean"].dropna()
                    if len(p):
                        ax.plot([float(p.iloc[0])], [y[k]], marker="D", mfc="none", mec="0.35", ms=4.5, ls="none")
            if metric != "hd95":
                ax.set_xlim(-0.02, 1.02)
                ax.set_xticks([0, 0.5, 1])
            ax.grid(axis="x", alpha=0.3, lw=0.5)
            ax.set_ylim(-0.6, len(models) - 0.4)
            if i == 0:
                ax.set_title(METRIC_NAMES.get(metric, metric) + (" ↓" if metric == "hd95" else " ↑"))
            if j == 0:
                ax.set_yticks(y, [model_label(m) for m in models])
                ax.set_ylabel(short_task(task))
    handles = [matplotlib.lines.Line2D([], [], color="0.3", marker="o", lw=1.4, label="mean, 95 % bootstrap interval"),
               matplotlib.lines.Line2D([], [], ls="none", marker="D", mfc="none", mec="0.35", label="paper")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    n = scores.groupby(["task", "model"]).size()
    count = str(int(n.min())) if n.min() == n.max() else f"{int(n.min())}-{int(n.max())}"
    note = (f"Each dot: the mean over the test cases of all seeds ({count} per model and task); "
            f"line: its 95 % percentile-bootstrap interval ({BOOTSTRAP_RESAMPLES} resamples). Every metric on its own "
            "axis (↑ higher is better, ↓ lower); accuracy counts background voxels and is near 1 for every model.")
    return base.save(fig, stem, axes.size, stamp, notes=(note,))


RADAR_AXES = list(METRICS)
#: HD95 on the radar: 0 mm at the rim (best), this many mm or more at the centre; a fixed, documented
#: constant (never the worst model shown)
RADAR_HD95_RANGE_MM = 150.0
_RADAR_NAMES = {"dice": "Dice", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall",
                "jaccard": "Jaccard", "hd95": f"HD95\n(rim 0 mm,\ncentre ≥ {RADAR_HD95_RANGE_MM:.0f} mm)"}


def radar_values(summary: pd.DataFrame, hd95_range_mm: float = RADAR_HD95_RANGE_MM) -> pd.DataFrame:
    """Model -> the radar's value per axis, each on [0, 1] with 1 best: Dice, accuracy,
    precision, recall and Jaccard as they are (clipped to [0, 1]); HD95 as
    ``1 - min(HD95, range) / range``. Fixed ranges: a model's point never depends on the others."""
    s = summary.set_index("model")
    values = s[[f"{m}_mean" for m in RADAR_AXES]].astype(float).copy()
    values.columns = RADAR_AXES
    values["hd95"] = 1.0 - values["hd95"].clip(lower=0.0, upper=hd95_range_mm) / hd95_range_mm
    return values.clip(0.0, 1.0)


@base.styled
def figure_radar(summary: pd.DataFrame, stem: str | Path, title: str, stamp: str | None = None) -> base.FigureOutput:
    """The paper's radar, as a look-alike. ``summary``: one row per model (``model, {metric}_mean``);
    axes as in :func:`radar_values` (radial range [0, 1] on every axis, 1 at the rim is best)."""
    values = radar_values(summary)
    notes = [f"Look-alike of the paper's chart; read the dot plots instead. Fixed ranges, not normalised to the "
             f"models shown: Dice, accuracy, precision, recall, Jaccard 0 (centre) to 1 (rim); HD95 "
             f"{RADAR_HD95_RANGE_MM:.0f} mm or more (centre) to 0 mm (rim). Areas depend on the order of the axes."]
    undefined = [f"{model_label(str(m))}: {', '.join(_RADAR_NAMES[k].split(chr(10))[0] for k in RADAR_AXES if np.isnan(v[k]))}"
                 for m, v in values.iterrows() if values.loc[m].isna().any()]
    if undefined:
        notes.append("Undefined (no case with a defined value), drawn at the centre: " + "; ".join(undefined) + ".")
    values = values.fillna(0.0)
    angles = np.linspace(0, 2 * np.pi, len(RADAR_AXES), endpoint=False)
    fig, ax = plt.subplots(figsize=(4.8, 5.0), subplot_kw={"projection": "polar"}, layout="constrained")
    for model, row in values.iterrows():
        color, marker = model_style(str(model))
        v = np.append(row.to_numpy(), row.to_numpy()[0])
        a = np.append(angles, angles[0])
        dashes = {"random": ":", "shuffled": "--"}.get(str(model).rsplit("-", 1)[-1], "-")  # controls: own line style too
        ax.plot(a, v, color=color, lw=1.4, ls=dashes, marker=marker, ms=4.5, label=model_label(str(model)))
    ax.set_xticks(angles, [_RADAR_NAMES[m] for m in RADAR_AXES])
    ax.tick_params(axis="x", pad=10)
    ax.set_ylim(0, 1.0)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["0.25", "0.5", "0.75", "1"], color="0.4")
    ax.set_rlabel_position(360 / len(RADAR_AXES) / 2)  # between the first two axes
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, frameon=False)
    ax.set_title(title, pad=14)
    return base.save(fig, stem, 1, stamp, notes=tuple(notes))
