"""``mvl figures``: the paper's figures from the long table, training curves and samples.npz.

Each ``figure_*`` function takes in-memory data and an output stem, saves ``{stem}.png`` and
``{stem}.pdf`` atomically and returns a :class:`FigureOutput` (paths, panel count, the figure's
texts and the colour of each legend entry):

* :func:`figure_training_curves` - Figure 3: train/val Dice and loss per epoch, ViT vs +LLM.
* :func:`figure_activation_maps` - Figure 4: input slice on top; V_E, V_LLM, V_D per model, one
  colour scale per row (stage), the ground-truth contour on every panel.
* :func:`figure_segmentations` - Figure 5 / Appendix Figure 2: task rows x model columns, slice
  with ground-truth contour and predicted overlay, classes named as the task's dataset.json
  names them, per-case Dice in each panel; sized to fit a letter page.
* :func:`figure_attention_strategies` - Appendix Figure 1: trainable parameters and Dice per
  strategy.
* :func:`figure_radar` - Appendix Figure 3: Dice, accuracy, precision, recall, Jaccard on [0, 1]
  and HD95 on the fixed range [0, :data:`RADAR_HD95_RANGE_MM`] mm (0 mm at the rim).
* :func:`figure_published_vs_reproduced` - new: reproduced vs published Dice, one point per run.

Every model has one colour and marker in every figure (:func:`medvisionllama.paper.published.model_style`),
and every figure of a run that is not the paper's configuration carries, on the image, the
configuration stamp built from the tables' own list of differences
(:func:`medvisionllama.paper.compare.configuration_differences`).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from medvisionllama.errors import InputError  # noqa: E402
from medvisionllama.io_utils import atomic_dir, atomic_path  # noqa: E402
from medvisionllama.paper.aggregate import read_long  # noqa: E402
from medvisionllama.paper.compare import comparison_values, configuration_differences  # noqa: E402
from medvisionllama.paper.published import ATTENTION_LABELS, model_label, model_style  # noqa: E402
from medvisionllama.experiments import load_config, load_experiments  # noqa: E402
from medvisionllama.paper.outputs.base import short_task as _short  # noqa: E402
from medvisionllama.paper.outputs.figures import (  # noqa: E402
    APPENDIX_FIGURE1, APPENDIX_FIGURE2, APPENDIX_FIGURE3, FIGURE3, FIGURE4, FIGURE5, PUBLISHED_VS_REPRODUCED,
)
from medvisionllama.paper.spec import ExperimentSpec  # noqa: E402
from medvisionllama.paper.summary import ExperimentScores, score_experiment  # noqa: E402
from medvisionllama.paper.tables import config_provenance, default_provenance  # noqa: E402
from medvisionllama.vocabulary import PAPER_METRICS as METRICS, RunKey  # noqa: E402

Sample = Mapping[str, np.ndarray]
ClassNames = Mapping[str, Mapping[int, str]]  #: task -> label value -> name (dataset.json ``labels``)

GT_COLOR = "#3cb44b"  #: the ground-truth contour in every figure
STAMP_FONTSIZE = 7
#: the largest page a figure may take (US letter, inches): Appendix Figure 2 is sized to fit it
PAGE_INCHES = (8.5, 11.0)
DPI = 150


@dataclass(frozen=True)
class FigureOutput:
    paths: list[Path]  #: the PNG and the PDF
    n_panels: int  #: axes holding data (figure-level legends not counted)
    texts: list[str] = field(default_factory=list)  #: every text artist of the figure (titles, labels, stamp)
    legend_colors: dict[str, str] = field(default_factory=dict)  #: legend entry -> its colour (``#rrggbb``)
    size_inches: tuple[float, float] = (0.0, 0.0)  #: the saved image (bounding box included), width x height


def _legend_colors(fig: plt.Figure) -> dict[str, str]:
    """Each legend entry's colour, read from the legend handles the figure really drew."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    out: dict[str, str] = {}
    for legend in legends:
        for handle, text in zip(legend.legend_handles, legend.texts):
            if isinstance(handle, matplotlib.lines.Line2D):
                color = handle.get_color()
            elif hasattr(handle, "get_facecolor"):
                faces = np.atleast_2d(handle.get_facecolor())
                if not len(faces):
                    continue
                color = faces[0]
            else:
                continue
            out[text.get_text()] = matplotlib.colors.to_hex(color)
    return out


def _footer(fig: plt.Figure, text: str, **style: Any) -> None:
    """``text`` under everything the figure holds (legends below the axes included), small and
    wrapped to the figure's width (wrapped here, so the layout knows its height)."""
    chars = max(40, int(fig.get_figwidth() * 72 / (STAMP_FONTSIZE * 0.55)))
    fig.draw_without_rendering()  # lays the figure out (constrained layout) first
    box = fig.get_tightbbox()  # inches, figure origin
    y = min(0.0, box.y0 / fig.get_figheight()) - 0.01
    fig.text(0.01, y, textwrap.fill(text, chars), ha="left", va="top", fontsize=STAMP_FONTSIZE, **style)


def _save(fig: plt.Figure, stem: str | Path, n_panels: int, stamp: str | None = None,
          notes: tuple[str, ...] = ()) -> FigureOutput:
    """Save ``fig`` as PNG and PDF. ``notes`` (e.g. the radar's ranges) and then ``stamp`` (the
    configuration stamp) are written under the figure, small and wrapped, so that a copy of the
    image still says what it shows."""
    stem = Path(stem)
    for note in notes:
        _footer(fig, note)
    if stamp:
        _footer(fig, stamp, color="#8b0000")
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    texts += [" ".join(t.split("\n")) for t in texts if "\n" in t]  # wrapped texts as one line too
    colors = _legend_colors(fig)
    paths = []
    for ext in ("png", "pdf"):
        target = stem.with_name(f"{stem.name}.{ext}")
        with atomic_path(target, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI, bbox_inches="tight")
        paths.append(target)
    height, width = plt.imread(paths[0]).shape[:2]
    size = (width / DPI, height / DPI)
    plt.close(fig)
    return FigureOutput(paths, n_panels, texts, colors, size)


def configuration_stamp(specs: list[ExperimentSpec], scored: Mapping[str, ExperimentScores],
                        provenance: Mapping[str, Any]) -> str | None:
    """The stamp of a figure drawn from ``specs``: the tables' differences from the paper's setup
    (:func:`configuration_differences`, once each), input sizes and seeds; ``None`` when the
    configuration is the paper's (no stamp)."""
    parts: list[str] = []
    for spec in specs:
        parts += configuration_differences(spec, default_provenance(scored[spec.name], dict(provenance)))
    parts = list(dict.fromkeys(parts))
    if not parts:
        return None
    sizes = ", ".join(dict.fromkeys(size for spec in specs for size in spec.sizes))
    seeds = ", ".join(str(s) for s in sorted({seed for spec in specs for seed in spec.seeds}))
    return ("NOT the paper's configuration: " + "; ".join(parts) + f". Input size {sizes}; seeds {seeds}. "
            "These numbers are not the paper's.")


def figure_training_curves(curves: pd.DataFrame, stem: str | Path, tasks: list[str], models: list[str],
                           stamp: str | None = None) -> FigureOutput:
    """Figure 3. ``curves``: rows of history.csv with ``task, model, seed`` (see ``mvl aggregate
    --curves``). One row of panels per task: Dice | loss; solid = training, dashed = validation;
    several seeds: mean line and ± sd band. Colours: :func:`model_style`."""
    missing = [c for c in ("task", "model", "seed", "epoch", "train_dice", "val_dice", "train_loss", "val_loss")
               if c not in curves.columns]
    if missing:
        raise InputError(f"training curves lack columns {missing}")
    data = curves[curves["task"].isin(tasks) & curves["model"].isin(models)]
    for task in tasks:
        for model in models:
            if data[(data["task"] == task) & (data["model"] == model)].empty:
                raise InputError(f"figure 3: no training curve for {task} / {model}")
    rows = []
    for quantity in ("dice", "loss"):
        for split, name in (("train", "training"), ("val", "validation")):
            part = data[["task", "model", "seed", "epoch", f"{split}_{quantity}"]].rename(columns={f"{split}_{quantity}": "value"})
            rows.append(part.assign(quantity=quantity, split=name))
    long = pd.concat(rows, ignore_index=True)
    long["Model"] = long["model"].map(model_label)
    palette = {model_label(m): model_style(m)[0] for m in models}
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.4 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, (quantity, ylabel) in enumerate((("dice", "Dice"), ("loss", "Loss (cross-entropy)"))):
            ax = axes[i, j]
            sub = long[(long["task"] == task) & (long["quantity"] == quantity)]
            sns.lineplot(sub, x="epoch", y="value", hue="Model", style="split", errorbar="sd", palette=palette,
                         hue_order=[model_label(m) for m in models], style_order=["training", "validation"],
                         ax=ax, legend=(i == 0 and j == 0))
            ax.set(title=f"{_short(task)}: {ylabel.split(' ')[0]}", xlabel="Epoch", ylabel=ylabel)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    if axes[0, 0].get_legend() is not None:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        axes[0, 0].get_legend().remove()
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.subplots_adjust(top=0.82 if len(tasks) == 1 else 0.9)
    fig.suptitle(FIGURE3.title, y=1.06 if len(tasks) == 1 else 1.02)
    return _save(fig, stem, axes.size, stamp)


def _contours(ax: plt.Axes, label: np.ndarray, color: str = GT_COLOR) -> None:
    """The ground truth of a slice (``label``: (X, Y) class values) as one contour per class
    (nested classes: the region ``>= k``), drawn in image orientation (``.T``, origin lower)."""
    for k in sorted(set(np.unique(label)) - {0}):
        ax.contour(np.asarray(label).T >= k, levels=[0.5], colors=color, linewidths=1.1, origin="lower")


ACTIVATION_LEVELS = (("act_V_E", "$V_E$ (encoder)"), ("act_V_LLM", "$V_{LLM}$ (LLM block)"),
                     ("act_V_D", "$V_D$ (decoder)"))


def figure_activation_maps(samples: Mapping[str, Sample], stem: str | Path, stamp: str | None = None) -> FigureOutput:
    """Figure 4. ``samples``: model name -> samples.npz of the same test case (first = the
    baseline). Top: the input slice (channel 0); below, one column per model: |activation| at
    V_E, V_LLM and V_D. One colour scale per row (stage), shared by the models: the smallest to
    the largest |activation| of that stage over the models shown (activations sit on a large
    baseline, so a scale from 0 would show a uniform panel), so models compare on one scale. The
    ground-truth contour is drawn on every panel; models without V_LLM show an empty panel."""
    if not samples:
        raise InputError("figure 4: no samples given")
    models = list(samples)
    first = samples[models[0]]
    label = np.asarray(first["label"])
    n = len(models)
    fig = plt.figure(figsize=(3.0 * n + 1.6, 3.0 * 4), layout="constrained")
    grid = fig.add_gridspec(4, n)
    top = fig.add_subplot(grid[0, :])
    top.imshow(np.asarray(first["image"])[0].T, cmap="gray", origin="lower")
    _contours(top, label)
    top.set_title(f"Input slice (case {str(np.asarray(first['case_id']))}, channel 0; green: ground truth)")
    top.axis("off")
    panels = 1
    for i, (key, name) in enumerate(ACTIVATION_LEVELS, start=1):
        maps = {m: np.abs(np.asarray(samples[m][key], dtype=float)) for m in models if key in samples[m]}
        vmin = min((float(a.min()) for a in maps.values()), default=0.0)
        vmax = max((float(a.max()) for a in maps.values()), default=1.0)
        vmax = vmax if vmax > vmin else vmin + 1.0
        row, image = [], None
        for j, model in enumerate(models):
            ax = fig.add_subplot(grid[i, j])
            row.append(ax)
            panels += 1
            ax.set_xticks([])
            ax.set_yticks([])
            if model in maps:
                image = ax.imshow(maps[model].T, cmap="inferno", vmin=vmin, vmax=vmax, origin="lower")
                _contours(ax, label)
            else:
                ax.text(0.5, 0.5, "no $V_{LLM}$\n(model has no LLM block)", ha="center", va="center",
                        transform=ax.transAxes, fontsize=9, color="0.4")
                ax.set_facecolor("0.95")
                ax.set_box_aspect(label.shape[1] / label.shape[0])
            if i == 1:
                ax.set_title(model_label(model), fontsize=11, color=model_style(model)[0])
            if j == 0:
                ax.set_ylabel(name, fontsize=11)
        if image is not None:
            fig.colorbar(image, ax=row, shrink=0.9, label="|activation|")
    fig.suptitle(f"{FIGURE4.title}: one colour scale per row")
    return _save(fig, stem, panels, stamp)


_PRED_COLORS = ["#e6194b", "#4363d8", "#f58231", "#911eb4"]


def _class_color(k: int) -> str:
    return _PRED_COLORS[(int(k) - 1) % len(_PRED_COLORS)]


def figure_segmentations(samples: Mapping[tuple[str, str], Sample], tasks: list[str], models: list[str],
                         stem: str | Path, title: str, class_names: ClassNames, stamp: str | None = None,
                         page: tuple[float, float] = PAGE_INCHES) -> FigureOutput:
    """Figure 5 / Appendix Figure 2. ``samples``: (task, model) -> samples.npz; ``class_names``:
    task -> label value -> name, from the task's dataset.json (:func:`load_class_names`). Each
    panel: the image slice (channel 0), the prediction as a coloured overlay (one colour per
    class), the ground truth as a green contour and the case's Dice; each row's legend names the
    task's classes. Panels shrink so that the figure, stamp included, fits ``page`` (inches)."""
    missing = [f"{t}/{m}" for t in tasks for m in models if (t, m) not in samples]
    if missing:
        raise InputError(f"{title}: no samples.npz for {missing}")
    unnamed = [t for t in tasks if t not in class_names]
    if unnamed:
        raise InputError(f"{title}: no dataset.json class names for {unnamed} (mvl figures --datasets)")
    legend_w, label_w, title_h, foot_h = 1.7, 0.45, 0.9, 0.55 + (1.0 if stamp else 0.0)  # foot: note, stamp
    panel = min(2.4, (page[0] - legend_w - label_w - 0.3) / len(models), (page[1] - title_h - foot_h) / len(tasks))
    fig, axes = plt.subplots(len(tasks), len(models), squeeze=False, layout="constrained",
                             figsize=(label_w + legend_w + panel * len(models), title_h + panel * len(tasks)))
    small = panel < 1.6
    for i, task in enumerate(tasks):
        names = {int(k): v for k, v in class_names[task].items() if int(k) != 0}
        for j, model in enumerate(models):
            s, ax = samples[(task, model)], axes[i, j]
            ax.imshow(np.asarray(s["image"])[0].T, cmap="gray", origin="lower")
            pred = np.asarray(s["pred"]).T
            for k in sorted(set(np.unique(pred)) - {0}):
                color = matplotlib.colors.to_rgba(_class_color(k), 0.45)
                ax.imshow(np.where(pred[..., None] == k, np.array(color), 0.0), origin="lower")
            _contours(ax, np.asarray(s["label"]))
            ax.text(0.03, 0.97, f"Dice {float(np.asarray(s['dice'])):.2f}", transform=ax.transAxes, ha="left",
                    va="top", fontsize=6.5 if small else 8, color="white",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.0, "linewidth": 0})
            if i == 0:
                ax.set_title(textwrap.fill(model_label(model), max(12, int(panel * 15))),
                             fontsize=7 if small else 9, color=model_style(model)[0])
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(_short(task), fontsize=8 if small else 11)
        first = samples[(task, models[0])]  # the case of the row (every model's sample is the first test case)
        case = str(np.asarray(first["case_id"])) if "case_id" in first else ""
        handles = [matplotlib.lines.Line2D([], [], color=GT_COLOR, lw=1.5, label="ground truth (contour)"),
                   *[matplotlib.patches.Patch(color=_class_color(k), alpha=0.45, label=f"{k}: {name} (overlay)")
                     for k, name in sorted(names.items())]]
        axes[i, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.03, 0.5), frameon=False,
                           fontsize=6 if small else 8, title_fontsize=6 if small else 8,
                           title=f"case {case}" if case else None, alignment="left",
                           handlelength=1.2)
    fig.suptitle(title, fontsize=11 if small else 12)
    note = ("Each panel: one slice of the row's test case; Dice: the case's Dice over the whole volume, "
            "the mean over its foreground classes.")
    return _save(fig, stem, axes.size, stamp, notes=(note,))


def figure_attention_strategies(summary: pd.DataFrame, stem: str | Path, order: list[str] | None = None,
                                stamp: str | None = None) -> FigureOutput:
    """Appendix Figure 1. ``summary``: :func:`medvisionllama.paper.summary.summarize` rows of one
    model (``attention, task, params_trainable, params_total, dice_mean, dice_std``). Left:
    trainable parameters per strategy (the frozen LLM block excluded; the total in the bar
    label); right: Dice per task and strategy (error bars: std over test cases)."""
    if "params_trainable" not in summary.columns:
        raise InputError("appendix figure 1: the summary has no params_trainable column (mvl aggregate)")
    s = summary.copy()
    s["Strategy"] = s["attention"].map(ATTENTION_LABELS)
    s["Task"] = s["task"].map(_short)
    order = [ATTENTION_LABELS[a] for a in order] if order else list(dict.fromkeys(s["Strategy"]))
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 2]})
    firsts = s.groupby("Strategy", sort=False)[["params_trainable", "params_total"]].first().reindex(order)
    scale, unit = (1e6, "M") if firsts["params_trainable"].max() >= 1e6 else (1e3, "k")
    bars = left.bar(firsts.index, firsts["params_trainable"].to_numpy() / scale, color=[palette[k] for k in order])
    left.bar_label(bars, labels=[f"{t / scale:.1f}{unit}\n(total {tot / 1e6:.2f}M)"
                                 for t, tot in zip(firsts["params_trainable"], firsts["params_total"])],
                   padding=2, fontsize=8)
    left.margins(y=0.3)
    left.set(title="Trainable parameters", ylabel=f"Trainable parameters ({unit})")
    tasks = list(dict.fromkeys(s["Task"]))
    width = 0.8 / len(order)
    for k, strategy in enumerate(order):
        part = s[s["Strategy"] == strategy].set_index("Task").reindex(tasks)
        x = np.arange(len(tasks)) + (k - (len(order) - 1) / 2) * width
        right.bar(x, part["dice_mean"], width, yerr=part["dice_std"], capsize=3, color=palette[strategy], label=strategy)
    right.set_xticks(np.arange(len(tasks)), tasks)
    right.set(title="Dice (mean ± std over test cases)", ylabel="Dice", ylim=(0, 1.15))
    right.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    right.legend(title="Hybrid attention", frameon=False, loc="upper right", ncol=len(order))
    models = list(dict.fromkeys(s["model"])) if "model" in s.columns else []
    fig.suptitle(APPENDIX_FIGURE1.title + (f": {', '.join(model_label(m) for m in models)}" if models else ""))
    fig.tight_layout()
    return _save(fig, stem, 2, stamp)


RADAR_AXES = list(METRICS)
#: HD95 on the radar: 0 mm at the rim (best), this many mm or more at the centre; a fixed, documented
#: constant (never the worst model shown). It resolves the 10-100 mm the models reach on Task01; a
#: worse HD95 (e.g. a missed class scored at the image diagonal, 360-740 mm on the synthetic tasks)
#: sits at the centre, as the figure's note says
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


def figure_radar(summary: pd.DataFrame, stem: str | Path, title: str, stamp: str | None = None) -> FigureOutput:
    """Appendix Figure 3. ``summary``: one row per model (``model, {metric}_mean``); axes as in
    :func:`radar_values` (radial range [0, 1] on every axis, 1 at the rim is best)."""
    values = radar_values(summary)
    notes = [f"Fixed ranges: Dice, accuracy, precision, recall, Jaccard 0 (centre) to 1 (rim); "
             f"HD95 {RADAR_HD95_RANGE_MM:.0f} mm or more (centre) to 0 mm (rim)."]
    undefined = [f"{model_label(str(m))}: {', '.join(_RADAR_NAMES[k].split(chr(10))[0] for k in RADAR_AXES if np.isnan(v[k]))}"
                 for m, v in values.iterrows() if values.loc[m].isna().any()]
    if undefined:
        notes.append("Undefined (no case with a defined value), drawn at the centre: " + "; ".join(undefined) + ".")
    values = values.fillna(0.0)
    angles = np.linspace(0, 2 * np.pi, len(RADAR_AXES), endpoint=False)
    fig, ax = plt.subplots(figsize=(6.2, 6.2), subplot_kw={"projection": "polar"})
    for model, row in values.iterrows():
        color, marker = model_style(str(model))
        v = np.append(row.to_numpy(), row.to_numpy()[0])
        a = np.append(angles, angles[0])
        ax.plot(a, v, color=color, lw=1.8, marker=marker, ms=6, label=model_label(str(model)))
        ax.fill(a, v, color=color, alpha=0.08)
    ax.set_xticks(angles, [_RADAR_NAMES[m] for m in RADAR_AXES])
    ax.tick_params(axis="x", pad=16)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_rlabel_position(90)  # between two axes, clear of the data lines
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    ax.set_title(title, pad=28)
    return _save(fig, stem, 1, stamp, notes=tuple(notes))


RUN_COLUMNS = ["task", "model", "attention", "size"]


def published_vs_reproduced_points(values: pd.DataFrame) -> pd.DataFrame:
    """One row per run (``task, model, attention, size``) from :func:`comparison_values` rows of
    several experiments: the Dice cells with a published counterpart. A run several tables
    share is one point: its published value is that of the first experiment listing it
    (``published_mean``); ``published_lo``/``published_hi`` span what all its tables print."""
    d = values[(values["metric"] == "dice") & values["published_mean"].notna()]
    if d.empty:
        raise InputError("published-vs-reproduced figure: no Dice cell has a published counterpart")
    grouped = d.groupby(RUN_COLUMNS, sort=False)
    points = grouped.first().reset_index()
    span = grouped["published_mean"].agg(["min", "max"]).reset_index()
    points = points.merge(span.rename(columns={"min": "published_lo", "max": "published_hi"}), on=RUN_COLUMNS)
    points["tables"] = grouped["table"].agg(lambda t: ", ".join(dict.fromkeys(t))).to_numpy()
    return points


def figure_published_vs_reproduced(values: pd.DataFrame, stem: str | Path, header: str | None = None) -> FigureOutput:
    """New figure. ``values``: :func:`medvisionllama.paper.compare.comparison_values` rows
    (several experiments concatenated); each run with a published Dice is one point
    (:func:`published_vs_reproduced_points`), reproduced (y, ± std over test cases) against
    published (x; a horizontal bar where the run's tables print different values); colour and
    marker: the reproduced model (:func:`model_style`)."""
    d = published_vs_reproduced_points(values)
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="reproduced = published")
    ax.errorbar(d["published_mean"], d["reproduced_mean"], yerr=d["reproduced_std"], fmt="none", ecolor="0.7",
                lw=0.8, zorder=0)
    spread = d[d["published_hi"] > d["published_lo"]]
    ax.hlines(spread["reproduced_mean"], spread["published_lo"], spread["published_hi"], color="0.6", lw=0.8, zorder=0)
    for model, part in d.groupby("model", sort=False):
        color, marker = model_style(str(model))
        paper = str(part["paper_model"].iloc[0])
        label = model_label(str(model)) + (f" (for {model_label(paper)})" if paper != model else "")
        ax.scatter(part["published_mean"], part["reproduced_mean"], color=color, marker=marker, s=50,
                   edgecolor="white", linewidth=0.5, label=label, zorder=3)
    lo = float(min(d["published_mean"].min(), d["reproduced_mean"].min(), 0.5)) - 0.05
    ax.set(xlim=(lo, 1), ylim=(lo, 1), xlabel="Published Dice (paper)", ylabel="Reproduced Dice (mean ± std over test cases)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False,
              title=f"{len(d)} runs, each once", title_fontsize=8)
    ax.set_title("Reproduced vs published Dice per task and model")
    return _save(fig, stem, 1, header)


# --------------------------------------------------------------------------------------- CLI


def load_samples(paths: list[str | Path]) -> dict[RunKey, dict[str, np.ndarray]]:
    out = {}
    for p in paths:
        try:
            with np.load(p, allow_pickle=False) as z:
                out[RunKey.from_path(p)] = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: cannot read samples.npz ({exc})") from exc
    return out


def _pick(samples: dict[RunKey, dict[str, np.ndarray]], spec: ExperimentSpec, task: str, model: str) -> dict[str, np.ndarray]:
    key = RunKey(task, model, spec.attention[0], spec.sizes[0], min(spec.seeds), 0 if spec.folds else None)
    if key not in samples:
        raise InputError(f"no samples.npz given for run {key.path()}")
    return samples[key]


def load_class_names(paths: list[str | Path]) -> dict[str, dict[int, str]]:
    """Task -> label value -> class name, from each task's ``dataset.json`` (``labels``).

    ``paths``: task folders (``data/Task01_BrainTumour``) or their ``dataset.json`` files; the
    task is the folder's name.
    """
    out: dict[str, dict[int, str]] = {}
    for p in map(Path, paths):
        file = p / "dataset.json" if p.is_dir() else p
        try:
            labels = json.loads(file.read_text(encoding="utf-8"))["labels"]
            out[file.parent.name] = {int(k): str(v) for k, v in labels.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{file}: cannot read the class names (dataset.json 'labels'): {exc}") from exc
    return out


def _with_trainable(summary: pd.DataFrame, long: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``params_trainable`` (from the long table; the same for every case of a run)."""
    keys = [k for k in RUN_COLUMNS if k in summary.columns]
    trainable = long.groupby(keys)["params_trainable"].first().reset_index()
    return summary.drop(columns=["params_trainable"], errors="ignore").merge(trainable, on=keys, how="left")


def write_figures(long_path: str | Path, config: str | Path, outdir: str | Path, curves_path: str | Path | None = None,
                  samples: list[str | Path] | None = None, experiments: list[str] | None = None,
                  datasets: list[str | Path] | None = None) -> list[Path]:
    """All figures the config's experiments call for (:mod:`medvisionllama.paper.outputs.figures`),
    into ``outdir`` (replaced atomically); the configuration stamp comes from ``config`` and the
    runs, the class names of the segmentation figures from ``datasets`` (dataset.json files or
    task folders)."""
    long = read_long(long_path)
    specs = load_experiments(config, experiments)
    provenance = config_provenance(load_config(config))
    scored = {spec.name: score_experiment(long, spec) for spec in specs}
    npz = load_samples(list(samples or []))
    names = load_class_names(list(datasets or []))
    outdir = Path(outdir)
    written: list[Path] = []
    with atomic_dir(outdir) as tmp:
        main = FIGURE3.source(specs)
        if main:
            if curves_path is None or not Path(curves_path).is_file():
                raise InputError(f"figure 3 needs --curves (training curves CSV of `mvl aggregate`), got {curves_path}")
            stamp = configuration_stamp([main], scored, provenance)
            curves = pd.read_csv(curves_path, dtype={"size": str})
            curves = curves[curves["attention"].eq(main.attention[0]) & curves["size"].eq(main.sizes[0])
                            & curves["seed"].isin(main.seeds)]
            two = [main.baseline, main.models[1]]
            written += figure_training_curves(curves, tmp / FIGURE3.stem, [main.tasks[0]], two, stamp).paths
            acts = {m: _pick(npz, main, main.tasks[0], m) for m in two}
            written += figure_activation_maps(acts, tmp / FIGURE4.stem, stamp).paths
        seg = FIGURE5.source(specs)
        if seg:
            stamp = configuration_stamp([seg], scored, provenance)
            fig5_tasks = [t for t in seg.tasks if t.startswith(("Task01", "Task03"))] or list(seg.tasks[:2])
            pick = {(t, m): _pick(npz, seg, t, m) for t in seg.tasks for m in seg.models}
            written += figure_segmentations(pick, fig5_tasks, list(seg.models), tmp / FIGURE5.stem, FIGURE5.title,
                                            names, stamp).paths
            written += figure_segmentations(pick, list(seg.tasks), list(seg.models), tmp / APPENDIX_FIGURE2.stem,
                                            APPENDIX_FIGURE2.title, names, stamp).paths
            s = scored[seg.name].summary
            task = next((t for t in seg.tasks if t.startswith("Task01")), seg.tasks[0])
            s = s[s["task"] == task].set_index("model").loc[list(seg.models)].reset_index()  # the config's order
            written += figure_radar(s, tmp / APPENDIX_FIGURE3.stem,
                                    f"Metrics on {_short(task)} ({APPENDIX_FIGURE3.title})", stamp).paths
        att = APPENDIX_FIGURE1.source(specs)
        if att:
            s = _with_trainable(scored[att.name].summary, long)
            written += figure_attention_strategies(s[s["model"] == att.models[0]], tmp / APPENDIX_FIGURE1.stem,
                                                   list(att.attention), configuration_stamp([att], scored, provenance)).paths
        values = pd.concat([comparison_values(scored[spec.name]) for spec in specs], ignore_index=True)
        stamp = configuration_stamp(specs, scored, provenance)
        if stamp:
            stamp += " Published numbers are shown for reference, not as the target of this run."
        written += figure_published_vs_reproduced(values, tmp / PUBLISHED_VS_REPRODUCED.stem, stamp).paths
        sweeps = [spec for spec in specs if spec.llm_layers]  # beyond the paper: Dice per LLM layer
        if sweeps:
            from medvisionllama.paper.layer_sweep_figure import write_layer_sweep_figure

            written += write_layer_sweep_figure([scored[s.name] for s in sweeps], tmp,
                                                configuration_stamp(sweeps, scored, provenance))
    return [outdir / p.name for p in written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", required=True, help="long table from `mvl aggregate`")
    parser.add_argument("--config", required=True,
                        help="pipeline config (YAML; the resolved results/config.yaml): experiments and provenance")
    parser.add_argument("--outdir", required=True, help="folder to write (replaced as a whole)")
    parser.add_argument("--curves", default=None, help="training curves CSV from `mvl aggregate --curves`")
    parser.add_argument("--samples", nargs="*", default=[], help="samples.npz files of the runs shown")
    parser.add_argument("--datasets", nargs="*", default=[],
                        help="task folders (or their dataset.json): the class names of the segmentation figures")
    parser.add_argument("--experiment", action="append", default=None, help="only this experiment (repeatable)")
    args = parser.parse_args(argv)
    written = write_figures(long_path=args.long, config=args.config, outdir=args.outdir, curves_path=args.curves,
                            samples=args.samples, experiments=args.experiment, datasets=args.datasets)
    print(f"figures: {len(written)} files -> {args.outdir}")
    return 0
