"""A custom experiment: your own comparison, beyond the paper (kind ``custom``).

Any models (the first is the baseline), any tasks (MSD or your own task folders), one attention
strategy and one input size. Layout: a parameter row, then one row per task and metric (Dice and
HD95); one column per model. Claims: each model against the baseline in Dice on every task, and
across the tasks when there are two or more — the same verdict machinery as the paper's tables
(:func:`medvisionllama.paper.compare.claims`). Nothing is compared with the paper: the table has
no published numbers and ``mvl tables`` writes no ``_comparison`` files for it.
"""

from __future__ import annotations

import pandas as pd

from medvisionllama.paper.outputs.base import Cell, Pair, PaperTable, Select, params_m, score
from medvisionllama.paper.published import METRIC_LABELS, model_label
from medvisionllama.tasks import task_info

#: the metrics of the table's rows (the claims are on Dice)
METRICS: tuple[str, ...] = ("dice", "hd95")


def _task_label(task: str) -> str:
    """``Task01`` for an MSD task, the folder name for a task of your own."""
    info = task_info(task)
    return info.short if info.msd else task


def layout(spec, cell: Cell) -> pd.DataFrame:
    att, size = spec.attention[0], spec.sizes[0]
    index = ["Params (M)"] + [f"{_task_label(t)} {METRIC_LABELS[m]}" for t in spec.tasks for m in METRICS]
    data = {
        model_label(m): [params_m(cell(spec.tasks[0], m, att, size))]
        + [score(cell(t, m, att, size), metric) for t in spec.tasks for metric in METRICS]
        for m in spec.models
    }
    return pd.DataFrame(data, index=pd.Index(index, name="Task"))


def task_pairs(spec, sel: Select) -> list[Pair]:
    return [(sel(m), sel(spec.baseline), "dice") for m in spec.models[1:]]


TABLE = PaperTable(
    name="custom", kind="custom",
    caption="Dice and HD95 per task for each model (a custom experiment, not a table of the paper)",
    metrics=("params_m", *METRICS), layout=layout, task_pairs=task_pairs, single=("attention", "sizes"),
    min_models=2, published=False,
)
