"""Beyond the paper: which LLM layer helps? Dice against layer depth per LLM, with intervals.

An experiment with ``llm_layers`` (a layer sweep, see :mod:`medvisionllama.experiments`) gets, besides
its paper table, ``{experiment}_layers.{csv,md,tex,html}`` and the figure ``layer_sweep``
(:mod:`medvisionllama.paper.figures.layers`). Every LLM column names the decoder layer it used,
``layer k of n`` (the default layer included, whose run keeps its name without ``@``); models
without an LLM block (``vit``, ``mlp``) are shown once, as the reference.

A cell is the mean Dice with a 95 % t-interval over the cell's replicate units: the test cases
when the runs have one seed (with cross-validation, the out-of-fold cases of the K fold runs
pooled: every case once), else the seeds' means (seeds are the replicates; cases within one
trained network are not independent evidence about the architecture). The row "all tasks" is the
mean of the task means with a t-interval over tasks. An interval needs two units; with one it is
left empty (``n`` says why). Intervals are clipped to Dice's range [0, 1] (a t-interval over few
units can reach past it).

The CSV is tidy (one row per task and model: ``task, model, llm, control, layer, num_layers,
depth, dice, ci_low, ci_high, n, unit``; ``depth = layer / (num_layers - 1)``, empty for models
without a block); the Markdown, LaTeX and HTML show the pivot (rows tasks, columns models).
Nothing here imports matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medvisionllama.paper.published import model_label
from medvisionllama.paper.render import to_html, to_latex, to_markdown, write_csv
from medvisionllama.io_utils import write_text_atomic
from medvisionllama.vocabulary import parse_model_name

if TYPE_CHECKING:
    from medvisionllama.paper.spec import ExperimentSpec
    from medvisionllama.paper.summary import ExperimentScores

#: the figure drawn from every layer sweep of the config (file stem)
FIGURE_STEM = "layer_sweep"
FIGURE_TITLE = "Dice against layer depth per LLM, with 95 % intervals"
ALL_TASKS = "all tasks"
COLUMNS = ["task", "model", "llm", "control", "layer", "num_layers", "depth", "dice", "ci_low", "ci_high", "n", "unit"]
CAPTION = ("Beyond the paper: Dice per LLM decoder layer (mean [95 % t-interval, clipped to [0, 1]]; units: test cases with one seed, "
           "out-of-fold cases pooled with cross-validation, seed means with several seeds; all tasks: over task means)")


def wanted(spec: "ExperimentSpec") -> bool:
    """Whether ``spec`` is a layer sweep (lists ``llm_layers``)."""
    return bool(spec.llm_layers)


def files(experiment: str) -> list[str]:
    """The table files of a layer sweep experiment."""
    return [f"{experiment}_layers.{ext}" for ext in ("csv", "md", "tex", "html")]


def figure_files(specs: list["ExperimentSpec"]) -> list[str]:
    """``layer_sweep.png|pdf`` when any experiment sweeps layers, else nothing."""
    return [f"{FIGURE_STEM}.{ext}" for ext in ("png", "pdf")] if any(wanted(s) for s in specs) else []


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values`` with a Student-t interval; low/high NaN below two values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2 or np.isnan(values).any():
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def _clipped(mean: float, low: float, high: float) -> tuple[float, float, float]:
    """The interval clipped to Dice's range [0, 1] (NaN stays NaN)."""
    return mean, (low if math.isnan(low) else max(low, 0.0)), (high if math.isnan(high) else min(high, 1.0))


def _units(rows: pd.DataFrame) -> tuple[np.ndarray, str]:
    """The replicate units of one cell: its cases (one seed) or its seeds' means (several)."""
    if rows["seed"].nunique() > 1:
        return rows.groupby("seed")["dice"].mean().to_numpy(), "seeds"
    return rows["dice"].to_numpy(), "cases"


def layer_rows(scored: "ExperimentScores") -> pd.DataFrame:
    """The tidy rows of the layer table (module docstring), tasks in the experiment's order then
    ``all tasks``; models in the experiment's order."""
    spec = scored.spec
    att, size = spec.attention[0], spec.sizes[0]
    scores = scored.scores[(scored.scores["attention"] == att) & (scored.scores["size"] == size)]
    out = []
    for model in spec.models:
        name = parse_model_name(model)
        layer, count = spec.model_layers.get(model, (None, None))
        info = {"model": model, "llm": name.llm or "", "control": name.control or "",
                "layer": layer, "num_layers": count,
                "depth": layer / (count - 1) if layer is not None and count and count > 1 else math.nan}
        task_means = []
        for task in spec.tasks:
            rows = scores[(scores["task"] == task) & (scores["model"] == model)]
            units, unit = _units(rows)
            mean, low, high = _clipped(*t_interval(units))
            task_means.append(mean)
            out.append({"task": task, **info, "dice": mean, "ci_low": low, "ci_high": high, "n": len(units), "unit": unit})
        mean, low, high = _clipped(*t_interval(np.array(task_means)))
        out.append({"task": ALL_TASKS, **info, "dice": mean, "ci_low": low, "ci_high": high, "n": len(task_means),
                    "unit": "tasks"})
    table = pd.DataFrame(out, columns=COLUMNS)
    table["layer"] = table["layer"].astype("Int64")
    table["num_layers"] = table["num_layers"].astype("Int64")
    return table


def column_label(row: pd.Series) -> str:
    """``ViT + SmolLM2-135M, layer 0 of 30``; ``ViT`` for a model without an LLM block."""
    if pd.isna(row["layer"]):
        return model_label(row["model"])
    return f"{model_label(parse_model_name(row['model']).base)}, layer {int(row['layer'])} of {int(row['num_layers'])}"


def _cell(row: pd.Series) -> str:
    if pd.isna(row["dice"]):
        return "n/a"
    if pd.isna(row["ci_low"]):
        return f"{row['dice']:.3f} (n = {int(row['n'])} {row['unit']}: no interval)"
    return f"{row['dice']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def pivot(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows tasks (short names) and ``all tasks``, columns the models labelled with their layer."""
    labels = {row["model"]: column_label(row) for _, row in rows.drop_duplicates("model").iterrows()}
    table = rows.assign(label=rows["model"].map(labels), cell=rows.apply(_cell, axis=1),
                        Task=rows["task"].map(lambda t: t if t == ALL_TASKS else t.split("_", 1)[0]))
    order = list(dict.fromkeys(table["label"]))
    tasks = list(dict.fromkeys(table["Task"]))
    return table.pivot(index="Task", columns="label", values="cell").loc[tasks, order].rename_axis(columns=None)


def notes(rows: pd.DataFrame) -> list[str]:
    units = sorted(set(rows.loc[rows["task"] != ALL_TASKS, "unit"]))
    n = sorted(set(rows.loc[rows["task"] != ALL_TASKS, "n"].astype(int)))
    return [f"Units per task cell: {', '.join(units)} (n = {', '.join(map(str, n))}); the all-tasks row: task means. "
            "Layers are 0-based decoder-layer indices; the run at the LLM's default layer keeps its name without @."]


def write_layer_table(scored: "ExperimentScores", outdir: Path, header: list[str]) -> list[Path]:
    """Write ``{experiment}_layers.{csv,md,tex,html}`` into ``outdir``; returns the paths."""
    rows = layer_rows(scored)
    header = [*header, "Beyond the paper: a sweep over LLM decoder layers (the paper uses one layer per LLM)."]
    csv, md, tex, html = (Path(outdir) / name for name in files(scored.spec.name))
    table, foot = pivot(rows), notes(rows)
    write_csv(rows, csv, header, index=False, footer_lines=foot)
    write_text_atomic(md, f"**{CAPTION}**\n\n" + to_markdown(table, header, foot))
    write_text_atomic(tex, to_latex(table, CAPTION, f"tab:{csv.stem}", header, foot))
    write_text_atomic(html, to_html(table, CAPTION, header, foot))
    return [csv, md, tex, html]
