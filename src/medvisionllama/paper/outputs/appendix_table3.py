"""Appendix Table 3 of the paper: parameters, Dice and HD95 per model.

Layout: one row per model, parameters, then Dice and HD95 per task. Claims: each pretrained LLM model beats
the baseline in Dice and HD95 (lower is better) on every task; each pretrained block beats its
own controls in Dice.
"""

from __future__ import annotations

import pandas as pd

from medvisionllama.paper.outputs.base import (
    Cell, Pair, PaperTable, Select, claimed_models, control_pairs, params_m, score, short_task,
)
from medvisionllama.paper.published import model_label


def layout(spec, cell: Cell) -> pd.DataFrame:
    att, size = spec.attention[0], spec.sizes[0]
    rows = []
    for model in spec.models:
        row = {"Model": model_label(model), "Params (M)": params_m(cell(spec.tasks[0], model, att, size))}
        for t in spec.tasks:
            row[f"{short_task(t)} Dice"] = score(cell(t, model, att, size), "dice")
            row[f"{short_task(t)} HD95"] = score(cell(t, model, att, size), "hd95")
        rows.append(row)
    return pd.DataFrame(rows).set_index("Model")


def task_pairs(spec, sel: Select) -> list[Pair]:
    pairs = [(sel(m), sel(spec.baseline), k) for m in claimed_models(spec) for k in ("dice", "hd95")]
    return pairs + control_pairs(spec, sel)


TABLE = PaperTable(
    name="appendix_table3", kind="complexity",
    caption="Parameters, Dice and HD95 per model (paper Appendix Table 3)",
    metrics=("params_m", "dice", "hd95"), layout=layout, task_pairs=task_pairs, single=("attention", "sizes"),
    min_models=2,
)
