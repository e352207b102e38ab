"""Appendix Table 1 of the paper: the hybrid attention strategies (sequential, parallel,
interleaved): parameters and Dice.

Layout: one row per strategy (and model, when there are several). Claims: the first strategy
beats each other one, per model and task.
"""

from __future__ import annotations

import pandas as pd

from medvisionllama.paper.outputs.base import Cell, Pair, PaperTable, Select, params_m, score, short_task
from medvisionllama.paper.published import ATTENTION_LABELS, model_label


def layout(spec, cell: Cell) -> pd.DataFrame:
    size = spec.sizes[0]
    rows = []
    for model in spec.models:
        for attention in spec.attention:
            row = {"Attention Strategy": ATTENTION_LABELS[attention]}
            if len(spec.models) > 1:
                row["Model"] = model_label(model)
            row["Params (M)"] = params_m(cell(spec.tasks[0], model, attention, size))
            row.update({f"{short_task(t)} Dice": score(cell(t, model, attention, size), "dice") for t in spec.tasks})
            rows.append(row)
    return pd.DataFrame(rows).set_index("Attention Strategy")


def task_pairs(spec, sel: Select) -> list[Pair]:
    return [(sel(m, spec.attention[0]), sel(m, other), "dice") for m in spec.models for other in spec.attention[1:]]


TABLE = PaperTable(
    name="appendix_table1", kind="attention_strategy",
    caption="Hybrid attention strategies: parameters and Dice (paper Appendix Table 1)",
    metrics=("params_m", "dice"), layout=layout, task_pairs=task_pairs, single=("sizes",),
)
