"""The figure of a layer sweep (beyond the paper): Dice against layer depth per LLM, with intervals.

One panel per task and one for all tasks; x = relative depth of the decoder layer,
``layer / (num_layers - 1)`` (0 = first layer, 1 = last), so LLMs of different depth share an axis;
each LLM (and each of its controls) a line in its colour and marker of every figure
(:func:`medvisionllama.paper.published.model_style`), with its 95 % t-intervals as error bars
(:mod:`medvisionllama.paper.outputs.layer_sweep`); models without an LLM block a horizontal
reference line with its interval as a band. The stamp under the figure says it is not the paper's.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from medvisionllama.paper.figures.base import FigureOutput, save, styled
from medvisionllama.paper.outputs.layer_sweep import ALL_TASKS, FIGURE_STEM, FIGURE_TITLE, layer_rows
from medvisionllama.paper.published import model_label, model_style
from medvisionllama.paper.summary import ExperimentScores
from medvisionllama.vocabulary import parse_model_name

NOTE = ("Beyond the paper: x = decoder layer / (layers - 1); error bars and bands: 95 % t-intervals "
        "(cases, out-of-fold cases with cross-validation, or seed means; all tasks: task means).")


def line_key(row: pd.Series) -> str:
    """The line a row belongs to: the model name without its layer (``smollm2-135m-shuffled``)."""
    return row["model"] if pd.isna(row["layer"]) else parse_model_name(row["model"]).base


@styled
def figure_layer_sweep(rows: pd.DataFrame, outdir: Path, stamp: str | None = None) -> FigureOutput:
    """Draw ``rows`` (:func:`layer_rows` of one or more experiments, with an ``experiment``
    column) into ``outdir/layer_sweep.png|pdf`` (a page wide: 7 in)."""
    panels = list(dict.fromkeys(rows["panel"]))
    cols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(7.0, 2.2 * nrows + 0.8), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, panel in zip(axes.ravel(), panels):
        part = rows[rows["panel"] == panel]
        for key, line in part.groupby(part.apply(line_key, axis=1), sort=False):
            color, marker = model_style(key)
            if line["layer"].isna().all():  # no LLM block: a reference over the whole depth axis
                value, low, high = (float(line.iloc[0][c]) for c in ("dice", "ci_low", "ci_high"))
                ax.axhline(value, color=color, lw=1.2, ls="--", label=model_label(key))
                if not math.isnan(low):
                    ax.axhspan(low, high, color=color, alpha=0.12, lw=0)
                continue
            line = line.sort_values("depth")
            low = (line["dice"] - line["ci_low"]).fillna(0).to_numpy()
            high = (line["ci_high"] - line["dice"]).fillna(0).to_numpy()
            ax.errorbar(line["depth"], line["dice"], yerr=[low, high], color=color, marker=marker, ms=5, lw=1.4,
                        capsize=3, label=model_label(key))
            for _, point in line.iterrows():
                ax.annotate(str(int(point["layer"])), (point["depth"], point["dice"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=color)
        ax.set_title(panel)
        ax.set_xlim(-0.05, 1.05)
        ax.set_xlabel("layer depth (0 = first, 1 = last)")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("Dice")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 3), frameon=False)
    fig.suptitle(FIGURE_TITLE)
    return save(fig, Path(outdir) / FIGURE_STEM, len(panels), stamp, notes=(NOTE,))


def write_layer_sweep_figure(scored: list[ExperimentScores], outdir: Path, stamp: str | None = None) -> list[Path]:
    """The layer-sweep figure of every experiment that sweeps layers (none: nothing written)."""
    parts = []
    for experiment in scored:
        if not experiment.spec.llm_layers:
            continue
        rows = layer_rows(experiment)
        prefix = f"{experiment.spec.name}: " if sum(bool(e.spec.llm_layers) for e in scored) > 1 else ""
        rows["panel"] = [prefix + (t if t == ALL_TASKS else t.split("_", 1)[0]) for t in rows["task"]]
        parts.append(rows)
    if not parts:
        return []
    return figure_layer_sweep(pd.concat(parts, ignore_index=True), outdir, stamp).paths

