"""Table 4 of the paper: the ViT vs the ViT with each LLM block (and here the controls), Dice.

Layout: a parameter row, then one row per task; one column per model. Claims: each pretrained
LLM model beats the baseline (the first model) in Dice on every task; each pretrained block beats
its own controls (the controls and the MLP are not claimed against the ViT: the paper makes no
such claim).
"""

from __future__ import annotations

import pandas as pd

from medvisionllama.paper.outputs.base import (
    Cell, Pair, PaperTable, Select, claimed_models, control_pairs, params_m, score, short_task,
)
from medvisionllama.paper.published import model_label


def layout(spec, cell: Cell) -> pd.DataFrame:
    att, size = spec.attention[0], spec.sizes[0]
    index = ["Params (M)"] + [short_task(t) for t in spec.tasks]
    data = {model_label(m): [params_m(cell(spec.tasks[0], m, att, size))]
            + [score(cell(t, m, att, size), "dice") for t in spec.tasks] for m in spec.models}
    return pd.DataFrame(data, index=pd.Index(index, name="Task"))


def task_pairs(spec, sel: Select) -> list[Pair]:
    return [(sel(m), sel(spec.baseline), "dice") for m in claimed_models(spec)] + control_pairs(spec, sel)


TABLE = PaperTable(
    name="table4", kind="llm_comparison",
    caption="Dice per task for the ViT and the ViT with each LLM block (paper Table 4)",
    metrics=("params_m", "dice"), layout=layout, task_pairs=task_pairs, single=("attention", "sizes"), min_models=2,
)
