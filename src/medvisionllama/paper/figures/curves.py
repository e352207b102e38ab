"""Training curves: Figure 3 (baseline vs +LLM on every task of the main experiment) and one
small-multiples figure per experiment (every task and run group), both from the rows of each
run's ``history.csv`` that ``mvl aggregate --curves`` collects.

The Dice of the curves is the one training records (``mvl train``): the hard (argmax) Dice, mean
over the foreground classes, of the training crops during the epoch (training) and of the whole
validation cases after it (validation). Lines are the mean over the replicates (seeds, and folds
with cross-validation) of a run group; the band spans their minimum to maximum.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import matplotlib.lines
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.paper.figures import base
from medvisionllama.paper.outputs.base import short_task
from medvisionllama.paper.outputs.figures import FIGURE3
from medvisionllama.paper.published import ATTENTION_LABELS, model_label, model_style

CURVE_COLUMNS = ("task", "model", "seed", "epoch", "train_dice", "val_dice", "train_loss", "val_loss")
DICE_NOTE = ("Dice: hard (argmax) Dice, mean over the foreground classes; training: the training crops during the "
             "epoch; validation: the whole validation cases after it. Loss: cross-entropy per voxel.")
_LINESTYLES = ("-", "--", ":", "-.")


def _check(curves: pd.DataFrame) -> None:
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise InputError(f"training curves lack columns {missing}")


def replicates(curves: pd.DataFrame) -> pd.Series:
    """Each row's replicate: ``seed`` or, with cross-validation (a ``fold`` column), ``seed-fold``."""
    rep = "seed" + curves["seed"].astype(int).astype(str)
    if "fold" in curves.columns:
        fold = pd.to_numeric(curves["fold"], errors="coerce")
        rep = rep.where(fold.isna(), rep + "-fold" + fold.fillna(0).astype(int).astype(str))
    return rep


def band(ax: plt.Axes, rows: pd.DataFrame, column: str, color: str, linestyle: str = "-") -> int:
    """Mean of ``column`` per epoch over the replicates of ``rows`` as a line, min-max as a band;
    returns the number of replicates."""
    rows = rows.assign(_rep=replicates(rows))
    stats = rows.groupby("epoch")[column].agg(["mean", "min", "max"])
    ax.plot(stats.index, stats["mean"], color=color, ls=linestyle, lw=1.1)
    n = rows["_rep"].nunique()
    if n > 1:
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.18, lw=0)
    return n


def _grid(n_tasks: int, n_columns: int) -> tuple[plt.Figure, np.ndarray]:
    height = min(1.35, (base.PAGE_INCHES[1] - 1.6) / n_tasks)
    fig, axes = plt.subplots(n_tasks, n_columns, squeeze=False, sharex=True, layout="constrained",
                             figsize=(base.PAGE_INCHES[0], 0.9 + height * n_tasks))
    for ax in axes.flat:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=5))
        ax.grid(alpha=0.3, lw=0.5)
    for ax in axes[-1]:
        ax.set_xlabel("Epoch")
    return fig, axes


@base.styled
def figure_training_curves(curves: pd.DataFrame, stem: str | Path, tasks: list[str], models: list[str],
                           stamp: str | None = None) -> base.FigureOutput:
    """Figure 3. ``curves``: rows of history.csv with ``task, model, seed`` (``mvl aggregate
    --curves``) of one attention and size. One row of panels per task: Dice | loss; solid =
    training, dashed = validation; mean over replicates with a min-max band."""
    _check(curves)
    data = curves[curves["task"].isin(tasks) & curves["model"].isin(models)]
    for task in tasks:
        for model in models:
            if data[(data["task"] == task) & (data["model"] == model)].empty:
                raise InputError(f"figure 3: no training curve for {task} / {model}")
    fig, axes = _grid(len(tasks), 2)
    counts = set()
    for i, task in enumerate(tasks):
        for j, (quantity, ylabel) in enumerate((("dice", "Dice"), ("loss", "Loss"))):
            ax = axes[i, j]
            for model in models:
                rows = data[(data["task"] == task) & (data["model"] == model)]
                for split, ls in (("train", "-"), ("val", "--")):
                    counts.add(band(ax, rows, f"{split}_{quantity}", model_style(model)[0], ls))
            ax.set_ylabel(f"{short_task(task)}\n{ylabel}" if j == 0 else ylabel)
            if i == 0:
                ax.set_title("Dice (hard, mean over foreground classes)" if quantity == "dice"
                             else "Loss (cross-entropy)")
    handles = [matplotlib.lines.Line2D([], [], color=model_style(m)[0], lw=2, label=model_label(m)) for m in models]
    handles += [matplotlib.lines.Line2D([], [], color="0.3", ls=ls, label=name)
                for ls, name in (("-", "training"), ("--", "validation"))]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"{FIGURE3.title}: {len(tasks)} task(s)")
    reps = ", ".join(str(c) for c in sorted(counts))
    note = f"Lines: mean over {reps} replicate(s) (seeds/folds) per model; band: their minimum to maximum. {DICE_NOTE}"
    return base.save(fig, stem, axes.size, stamp, notes=(note,))


def group_label(row: pd.Series, varies: Sequence[str]) -> str:
    """A run group's legend label: the model, plus attention and size where the experiment varies them."""
    label = model_label(str(row["model"]))
    if "attention" in varies:
        label += f" [{ATTENTION_LABELS.get(str(row['attention']), row['attention'])}]"
    if "size" in varies:
        label += f" [{row['size']}]"
    return label


@base.styled
def figure_experiment_curves(curves: pd.DataFrame, stem: str | Path, title: str, stamp: str | None = None) -> base.FigureOutput:
    """Every run group of one experiment (``curves`` already filtered to its runs): one row per
    task; columns training Dice, validation Dice, training loss, validation loss; one colour per
    model (:func:`model_style`), one line style per attention or input size where the experiment
    varies them; mean over replicates with a min-max band."""
    _check(curves)
    if curves.empty:
        raise InputError(f"{title}: no training curves")
    curves = curves.assign(attention=curves.get("attention", ""), size=curves.get("size", "").astype(str))
    varies = [k for k in ("attention", "size") if curves[k].nunique() > 1]
    groups = curves[["model", "attention", "size"]].drop_duplicates().reset_index(drop=True)
    styles = {v: ls for v, ls in zip(sorted({tuple(r[k] for k in varies) for _, r in groups.iterrows()}),
                                     itertools.cycle(_LINESTYLES))}
    tasks = list(dict.fromkeys(curves["task"]))
    columns = (("train_dice", "Training Dice"), ("val_dice", "Validation Dice"), ("train_loss", "Training loss"),
               ("val_loss", "Validation loss"))
    fig, axes = _grid(len(tasks), len(columns))
    counts = set()
    handles = []
    for _, g in groups.iterrows():
        color = model_style(str(g["model"]))[0]
        ls = styles[tuple(g[k] for k in varies)]
        handles.append(matplotlib.lines.Line2D([], [], color=color, ls=ls, lw=1.5, label=group_label(g, varies)))
        for i, task in enumerate(tasks):
            rows = curves[(curves["task"] == task) & (curves["model"] == g["model"])
                          & (curves["attention"] == g["attention"]) & (curves["size"] == g["size"])]
            if rows.empty:
                continue
            for j, (column, _) in enumerate(columns):
                counts.add(band(axes[i, j], rows, column, color, ls))
    for i, task in enumerate(tasks):
        axes[i, 0].set_ylabel(short_task(task))
    for j, (_, name) in enumerate(columns):
        axes[0, j].set_title(name)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 3), frameon=False)
    fig.suptitle(title)
    reps = ", ".join(str(c) for c in sorted(counts))
    note = f"Lines: mean over {reps} replicate(s) (seeds/folds) per run group; band: their minimum to maximum. {DICE_NOTE}"
    return base.save(fig, stem, axes.size, stamp, notes=(note,))
