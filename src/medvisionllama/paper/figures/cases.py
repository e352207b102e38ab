"""Every test case visible: per-case strip plots of Dice and HD95 per task and run group, with
the paper's mean ± sd drawn behind (Appendix Figure 1 and one figure per experiment).

A handful of test cases gives no meaningful standard deviation, so no error bar is drawn from
them: each (seed, case) score is a point, the mean of the points a short bar, and the axis says
``n`` under each group. The published mean ± sd (where the paper prints one for that cell) is a
grey band behind the points with a line at the mean. Penalised scores (a missed class scored at
its worst value) are drawn as crosses.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.paper.figures import base
from medvisionllama.paper.outputs.base import short_task
from medvisionllama.paper.published import ATTENTION_LABELS, model_label, model_style

GROUP_COLUMNS = ["model", "attention", "size"]
METRIC_NAMES = {"dice": "Dice", "hd95": "HD95 (mm)", "accuracy": "Accuracy", "precision": "Precision",
                "recall": "Recall", "jaccard": "Jaccard"}
TASKS_PER_ROW = 5


def variant_names(groups: pd.DataFrame) -> list[str]:
    """Per run group what tells it from the other groups of its model: the attention strategy
    and / or the input size where the groups differ in them ("" where only the model differs)."""
    varies = [k for k in ("attention", "size") if groups[k].nunique() > 1]
    names = []
    for _, g in groups.iterrows():
        parts = []
        if "attention" in varies:
            parts.append(ATTENTION_LABELS.get(str(g["attention"]), str(g["attention"])).split()[0])
        if "size" in varies:
            parts.append(str(g["size"]))
        names.append(" ".join(parts))
    return names


def _n_label(rows: pd.DataFrame, metric: str) -> str:
    return f"n={int(rows[metric].notna().sum())}"


def _count_words(seeds: pd.Series) -> str:
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"test cases x {lo if lo == hi else f'{lo}-{hi}'} seed(s)"


def draw_cases(ax: plt.Axes, scores: pd.DataFrame, groups: pd.DataFrame, metric: str, colors: Sequence[str],
               markers: Sequence[str], published: pd.DataFrame | None = None, seed: int = 0,
               names: Sequence[str] | None = None) -> None:
    """One panel: per group (x position) its per-case ``metric`` scores as jittered points, their mean
    as a bar, the published mean ± sd behind; x tick labels give n."""
    rng = np.random.default_rng(seed)
    ticks = []
    for x, (_, g) in enumerate(groups.iterrows()):
        rows = scores[(scores[GROUP_COLUMNS] == g[GROUP_COLUMNS].to_numpy()).all(axis=1)]
        if published is not None:
            p = published[(published[GROUP_COLUMNS] == g[GROUP_COLUMNS].to_numpy()).all(axis=1)]
            if not p.empty and pd.notna(p["published_mean"].iloc[0]):
                mean, sd = float(p["published_mean"].iloc[0]), float(p["published_std"].iloc[0])
                if not math.isnan(sd):
                    ax.add_patch(matplotlib.patches.Rectangle((x - 0.38, mean - sd), 0.76, 2 * sd, color="0.85",
                                                              lw=0, zorder=0))
                ax.hlines(mean, x - 0.38, x + 0.38, color="0.45", lw=1.0, ls=(0, (2, 1)), zorder=1)
        values = rows[metric].to_numpy(dtype=float)
        status = rows.get(f"{metric}_status", pd.Series("defined", index=rows.index)).astype(str).to_numpy()
        jitter = x + rng.uniform(-0.2, 0.2, len(values))
        ok = status != "penalised"
        ax.scatter(jitter[ok], values[ok], s=20, color=colors[x], marker=markers[x], edgecolor="white",
                   linewidth=0.4, zorder=3)
        ax.scatter(jitter[~ok], values[~ok], s=22, color=colors[x], marker="x", linewidth=0.9, zorder=3)
        if np.isfinite(values).any():
            ax.hlines(np.nanmean(values), x - 0.3, x + 0.3, color="black", lw=1.4, zorder=4)
        ticks.append((f"{names[x]}\n" if names and names[x] else "") + _n_label(rows, metric))
    ax.set_xticks(range(len(groups)), ticks, rotation=90 if names and any(names) else 0)
    ax.set_xlim(-0.6, len(groups) - 0.4)


@base.styled
def figure_case_scores(scores: pd.DataFrame, stem: str | Path, title: str, metrics: Sequence[str] = ("dice", "hd95"),
                       published: pd.DataFrame | None = None, stamp: str | None = None) -> base.FigureOutput:
    """Per-case scores of one experiment. ``scores``: :func:`medvisionllama.paper.summary.case_scores`
    rows (``task, model, attention, size, seed, case_id``, the metrics and their ``_status``);
    ``published``: :func:`medvisionllama.paper.compare.comparison_values` rows (``published_mean``,
    ``published_std`` per task, group and metric; None or NaN: nothing behind). One panel per task
    and metric (tasks in rows of :data:`TASKS_PER_ROW`); colour and marker: the model."""
    missing = [c for c in ["task", "seed", *GROUP_COLUMNS, *metrics] if c not in scores.columns]
    if missing:
        raise InputError(f"{title}: the per-case scores lack columns {missing}")
    if scores.empty:
        raise InputError(f"{title}: no per-case scores")
    scores = scores.assign(size=scores["size"].astype(str))
    groups = scores[GROUP_COLUMNS].drop_duplicates().reset_index(drop=True)
    names = variant_names(groups)
    colors = [model_style(str(m))[0] for m in groups["model"]]
    markers = [model_style(str(m))[1] for m in groups["model"]]
    tasks = list(dict.fromkeys(scores["task"]))
    per_row = min(len(tasks), TASKS_PER_ROW)
    blocks = math.ceil(len(tasks) / per_row)
    n_rows = blocks * len(metrics)
    width = min(base.PAGE_INCHES[0], max(4.5, 1.0 + per_row * max(1.25, 0.42 * len(groups))))
    fig, axes = plt.subplots(n_rows, per_row, squeeze=False, layout="constrained",
                             figsize=(width, 0.9 + n_rows * min(1.7, (base.PAGE_INCHES[1] - 2.2) / n_rows)))
    pub = published
    if pub is not None:
        pub = pub.assign(size=pub["size"].astype(str))
    for t, task in enumerate(tasks):
        block, col = divmod(t, per_row)
        for m, metric in enumerate(metrics):
            ax = axes[block * len(metrics) + m, col]
            here = pub[(pub["task"] == task) & (pub["metric"] == metric)] if pub is not None else None
            draw_cases(ax, scores[scores["task"] == task], groups, metric, colors, markers, here, seed=t,
                       names=names if m == len(metrics) - 1 else None)
            if m < len(metrics) - 1 and any(names):
                ax.set_xticks(range(len(groups)), [_n_label(scores[(scores["task"] == task)
                                                                   & (scores[GROUP_COLUMNS] == g.to_numpy()).all(axis=1)],
                                                            metric) for _, g in groups[GROUP_COLUMNS].iterrows()])
            ax.set_title(short_task(task) if m == 0 else "", pad=2)
            if col == 0:
                ax.set_ylabel(METRIC_NAMES.get(metric, metric))
            if metric != "hd95":
                ax.set_ylim(-0.03, 1.03)
            ax.grid(axis="y", alpha=0.3, lw=0.5)
    for ax in axes.flat[len(tasks) * 0:]:
        if not ax.has_data():
            ax.axis("off")
    models = list(dict.fromkeys(groups["model"]))
    handles = [matplotlib.lines.Line2D([], [], ls="none", marker=model_style(str(m))[1], color=model_style(str(m))[0],
                                       label=model_label(str(m)), markersize=5) for m in models]
    handles += [matplotlib.lines.Line2D([], [], color="black", lw=1.4, label="mean of the points"),
                matplotlib.patches.Patch(color="0.85", label="paper: mean ± sd"),
                matplotlib.lines.Line2D([], [], ls="none", marker="x", color="0.3", label="penalised (missed class)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), frameon=False)
    fig.suptitle(title)
    seeds = scores.groupby(GROUP_COLUMNS)["seed"].nunique()
    note = ("Each point: one test case of one seed (its score is the mean over the foreground classes). "
            f"n under each group: the points ({_count_words(seeds)} per group). Grey band and dashed line: the paper's mean ± sd for that cell, "
            "where it prints one.")
    return base.save(fig, stem, len(tasks) * len(metrics), stamp, notes=(note,))


@base.styled
def figure_attention_strategies(scores: pd.DataFrame, params: pd.DataFrame, stem: str | Path, order: list[str],
                                published: pd.DataFrame | None = None, title: str = "",
                                stamp: str | None = None) -> base.FigureOutput:
    """Appendix Figure 1. ``params``: per attention strategy ``params_trainable, params_total``
    (one model); ``scores``: its per-case scores. Left: trainable parameters per strategy (the
    frozen LLM block excluded; the total in the bar label); right: per-case Dice per task and
    strategy with the paper's mean ± sd behind (:func:`draw_cases`)."""
    if "params_trainable" not in params.columns:
        raise InputError("appendix figure 1: no params_trainable column (mvl aggregate)")
    labels = [ATTENTION_LABELS.get(a, a) for a in order]
    palette = ["#0072b2", "#e69f00", "#009e73", "#cc79a7"][: len(order)]
    p = params.set_index("attention").reindex(order)
    tasks = list(dict.fromkeys(scores["task"]))
    fig, axes = plt.subplots(1, 1 + len(tasks), figsize=(base.PAGE_INCHES[0], 2.9), layout="constrained",
                             gridspec_kw={"width_ratios": [1.1] + [1.0] * len(tasks)}, squeeze=False)
    left = axes[0, 0]
    scale, unit = (1e6, "M") if p["params_trainable"].max() >= 1e6 else (1e3, "k")
    bars = left.bar(range(len(order)), p["params_trainable"].to_numpy() / scale, color=palette)
    left.bar_label(bars, labels=[f"{t / scale:.1f}{unit}\n(total\n{tot / 1e6:.2f}M)"
                                 for t, tot in zip(p["params_trainable"], p["params_total"])], padding=2,
                   fontsize=base.MIN_FONT_PT)
    left.set_xticks(range(len(order)), [lab.split()[0] for lab in labels], rotation=30, ha="right")
    left.margins(y=0.45)
    left.set(title="Trainable parameters", ylabel=f"Trainable parameters ({unit})")
    s = scores.assign(size=scores["size"].astype(str))
    groups = (s[GROUP_COLUMNS].drop_duplicates().set_index("attention").reindex(order).reset_index()[GROUP_COLUMNS])
    pub = published.assign(size=published["size"].astype(str)) if published is not None else None
    for t, task in enumerate(tasks):
        ax = axes[0, 1 + t]
        here = pub[(pub["task"] == task) & (pub["metric"] == "dice")] if pub is not None else None
        draw_cases(ax, s[s["task"] == task], groups, "dice", palette, ["o"] * len(order), here, seed=t)
        ax.set(title=short_task(task), ylim=(-0.03, 1.03))
        ax.set_ylabel("Dice per test case" if t == 0 else "")
        ax.grid(axis="y", alpha=0.3, lw=0.5)
    handles = [matplotlib.patches.Patch(color=c, label=lab) for c, lab in zip(palette, labels)]
    handles += [matplotlib.lines.Line2D([], [], color="black", lw=1.4, label="mean"),
                matplotlib.patches.Patch(color="0.85", label="paper: mean ± sd")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    note = ("Right: each point one test case of one seed; n under each strategy; black bar: the mean; grey band and "
            "dashed line: the paper's mean ± sd where it prints one. No error bars from a handful of cases.")
    return base.save(fig, stem, 1 + len(tasks), stamp, notes=(note,))
