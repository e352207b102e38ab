"""Reproduced vs published Dice, one point per run group, each labelled with its task."""

from __future__ import annotations

from pathlib import Path

import matplotlib.lines
import matplotlib.pyplot as plt
import pandas as pd

from medvisionllama.paper.figures import base
from medvisionllama.paper.outputs.figures import PUBLISHED_VS_REPRODUCED
from medvisionllama.paper.published import model_label, model_style

RUN_COLUMNS = ["task", "model", "attention", "size"]


def published_vs_reproduced_points(values: pd.DataFrame) -> pd.DataFrame:
    """One row per run (``task, model, attention, size``) from :func:`comparison_values` rows of
    several experiments: the Dice cells with a published counterpart. A run several tables
    share is one point: its published value is that of the first experiment listing it
    (``published_mean``); ``published_lo``/``published_hi`` span what all its tables print.
    Experiments without published numbers (layer sweeps, custom experiments) add no point; with
    none at all the frame is empty."""
    d = values[(values["metric"] == "dice") & values["published_mean"].notna()]
    if d.empty:
        return pd.DataFrame(columns=[*values.columns, "published_lo", "published_hi", "tables"])
    grouped = d.groupby(RUN_COLUMNS, sort=False)
    points = grouped.first().reset_index()
    span = grouped["published_mean"].agg(["min", "max"]).reset_index()
    points = points.merge(span.rename(columns={"min": "published_lo", "max": "published_hi"}), on=RUN_COLUMNS)
    points["tables"] = grouped["table"].agg(lambda t: ", ".join(dict.fromkeys(t))).to_numpy()
    return points


@base.styled
def figure_published_vs_reproduced(values: pd.DataFrame, stem: str | Path, header: str | None = None) -> base.FigureOutput:
    """``values``: :func:`medvisionllama.paper.compare.comparison_values` rows (several experiments
    concatenated); each run with a published Dice is one point (:func:`published_vs_reproduced_points`),
    reproduced (y, the table's mean) against published (x; a horizontal bar where the run's tables
    print different values), labelled with its task number; colour and marker: the reproduced model."""
    d = published_vs_reproduced_points(values)
    fig, ax = plt.subplots(figsize=(5.6, 4.2), layout="constrained")
    if d.empty:  # only experiments the paper has no numbers for: say so instead of failing
        ax.text(0.5, 0.5, "No run of this configuration has a published Dice\n(the paper prints none for its "
                "experiments)", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
        ax.set_title(PUBLISHED_VS_REPRODUCED.title)
        return base.save(fig, stem, 0, header)
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--")
    spread = d[d["published_hi"] > d["published_lo"]]
    ax.hlines(spread["reproduced_mean"], spread["published_lo"], spread["published_hi"], color="0.55", lw=0.9, zorder=1)
    handles = [matplotlib.lines.Line2D([], [], color="0.5", lw=0.8, ls="--", label="reproduced = published"),
               matplotlib.lines.Line2D([], [], color="0.55", lw=0.9, label="published values differ\nbetween the run's tables")]
    for model, part in d.groupby("model", sort=False):
        color, marker = model_style(str(model))
        paper = str(part["paper_model"].iloc[0])
        label = model_label(str(model)) + (f" (for {model_label(paper)})" if paper != model else "")
        ax.scatter(part["published_mean"], part["reproduced_mean"], color=color, marker=marker, s=26,
                   edgecolor="white", linewidth=0.4, zorder=3)
        handles.append(matplotlib.lines.Line2D([], [], ls="none", marker=marker, color=color, label=label))
        for _, r in part.iterrows():
            ax.annotate(str(r["task"])[4:6], (r["published_mean"], r["reproduced_mean"]), xytext=(3, 2),
                        textcoords="offset points", fontsize=base.MIN_FONT_PT, color=color)
    lo = float(min(d["published_mean"].min(), d["reproduced_mean"].min(), 0.5)) - 0.05
    ax.set(xlim=(lo, 1), ylim=(lo, 1), xlabel="Published Dice (paper)", ylabel="Reproduced Dice (mean over test cases)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False,
              title=f"{len(d)} runs, each once")
    ax.set_title(PUBLISHED_VS_REPRODUCED.title)
    note = ("Label at each point: the task number (Task01 ... Task10). A run that several tables share is one point "
            "at the first table's published value. Below the dashed line: short of the paper.")
    return base.save(fig, stem, 1, header, notes=(note,))
