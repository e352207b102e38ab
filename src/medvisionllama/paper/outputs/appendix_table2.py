"""Appendix Table 2 of the paper: input size vs training time and Dice.

Layout: one row per model (per task and model with several tasks), columns size x (TT, Device,
DSC): the training time beside the device it was measured on (``run.json``), since times from
different devices do not compare.
Claims: each pretrained LLM model beats the baseline in Dice at every size (``size_for_paper`` maps
the sizes run here to the paper's); each pretrained block beats its own controls.
"""

from __future__ import annotations

import pandas as pd

from medvisionllama.paper.outputs.base import (
    Cell, Pair, PaperTable, Select, claimed_models, control_pairs, hours, score, short_task,
)
from medvisionllama.paper.published import model_label


def layout(spec, cell: Cell) -> pd.DataFrame:
    att = spec.attention[0]
    columns = pd.MultiIndex.from_tuples([(sz.replace("x", "×"), k) for sz in spec.sizes
                                         for k in ("TT", "Device", "DSC")])
    rows, index = [], []
    for task in spec.tasks:
        for model in spec.models:
            cells = []
            for sz in spec.sizes:
                row = cell(task, model, att, sz)
                cells += [hours(row["train_seconds"]), str(row["device"]), score(row, "dice")]
            rows.append(cells)
            index.append(model_label(model) if len(spec.tasks) == 1 else f"{short_task(task)} {model_label(model)}")
    return pd.DataFrame(rows, index=pd.Index(index, name="Model"), columns=columns)


def task_pairs(spec, sel: Select) -> list[Pair]:
    out: list[Pair] = []
    for s in spec.sizes:
        out += [(sel(m, size_=s), sel(spec.baseline, size_=s), "dice") for m in claimed_models(spec)]
        out += control_pairs(spec, sel, size_=s)
    return out


TABLE = PaperTable(
    name="appendix_table2", kind="input_size",
    caption="Training time (h) and Dice per input size (paper Appendix Table 2)",
    metrics=("train_hours", "dice"), layout=layout, task_pairs=task_pairs, single=("attention",), min_models=2,
    claim_at_size=True,
)
