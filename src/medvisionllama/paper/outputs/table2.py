"""Table 2 of the paper: the ViT vs the ViT with an LLM block on every task, six metrics.

Layout: one row per metric, columns task x model. Claims: each pretrained LLM model beats the
baseline (the first model) on every metric and task; each pretrained block beats its own controls
in Dice (``base.control_pairs``).
"""

from __future__ import annotations

import pandas as pd

from medvisionllama.paper.outputs.base import (
    Cell, Pair, PaperTable, Select, claimed_models, control_pairs, score, short_task,
)
from medvisionllama.paper.published import METRIC_LABELS, model_label
from medvisionllama.vocabulary import PAPER_METRICS


def layout(spec, cell: Cell) -> pd.DataFrame:
    att, size = spec.attention[0], spec.sizes[0]
    columns = pd.MultiIndex.from_tuples([(short_task(t), model_label(m)) for t in spec.tasks for m in spec.models])
    data = [[score(cell(t, m, att, size), metric) for t in spec.tasks for m in spec.models] for metric in PAPER_METRICS]
    return pd.DataFrame(data, index=pd.Index([METRIC_LABELS[m] for m in PAPER_METRICS], name="Metric"), columns=columns)


def task_pairs(spec, sel: Select) -> list[Pair]:
    pairs = [(sel(m), sel(spec.baseline), k) for m in claimed_models(spec) for k in PAPER_METRICS]
    return pairs + control_pairs(spec, sel)


TABLE = PaperTable(
    name="table2", kind="main",
    caption="Metric scores of the ViT and the ViT with an LLM block per task (paper Table 2)",
    metrics=PAPER_METRICS, layout=layout, task_pairs=task_pairs, single=("attention", "sizes"), min_models=2,
)
