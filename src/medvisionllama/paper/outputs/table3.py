"""Table 3 of the paper: hybrid (HA) vs spatial (SA) attention, and the LLM block vs an MLP.

Runs: every model with the hybrid attention; with ``spatial`` only the models with an LLM block
(the paper's Table 3 has no spatial ViT or ViT + MLP row). Layout: one row per (model,
attention), parameters, HA/SA marks and Dice per task. Claims: each pretrained LLM model's HA beats its
SA, and beats every model without an LLM block; each pretrained block beats its own controls (HA).
"""

from __future__ import annotations

import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.paper.outputs.base import (
    Cell, Pair, PaperTable, Select, control_pairs, params_m, score, short_task,
)
from medvisionllama.paper.published import model_label
from medvisionllama.vocabulary import RunKey, parse_model_name


def check(spec) -> None:
    hybrids = [a for a in spec.attention if a != "spatial"]
    if len(hybrids) != 1 or "spatial" not in spec.attention:
        raise InputError(f"experiment {spec.name!r}: kind capacity takes one hybrid attention and 'spatial', "
                         f"got {list(spec.attention)}")


def keep_run(run: RunKey) -> bool:
    return run.attention != "spatial" or parse_model_name(run.model).kind == "llm"


def layout(spec, cell: Cell) -> pd.DataFrame:
    size = spec.sizes[0]
    rows = []
    for model, attention in dict.fromkeys((r.model, r.attention) for r in TABLE.required_runs(spec)):
        first = cell(spec.tasks[0], model, attention, size)
        row = {"Model": model_label(model), "Params (M)": params_m(first),
               "HA": "×" if attention == "spatial" else "✓", "SA": "✓" if attention == "spatial" else "×"}
        row.update({short_task(t): score(cell(t, model, attention, size), "dice") for t in spec.tasks})
        rows.append(row)
    return pd.DataFrame(rows).set_index("Model")


def task_pairs(spec, sel: Select) -> list[Pair]:
    out: list[Pair] = []
    hybrid = next(a for a in spec.attention if a != "spatial")
    llms = [m for m in spec.models if parse_model_name(m).pretrained]  # no claims about controls
    others = [m for m in spec.models if parse_model_name(m).kind != "llm"]
    for m in llms:
        out.append((sel(m, hybrid), sel(m, "spatial"), "dice"))
        out += [(sel(m, hybrid), sel(o, hybrid), "dice") for o in others]
    return out + control_pairs(spec, sel, attention=hybrid)


TABLE = PaperTable(
    name="table3", kind="capacity",
    caption="Hybrid (HA) vs spatial (SA) attention, and the LLM block vs an MLP (paper Table 3)",
    metrics=("params_m", "dice"), layout=layout, task_pairs=task_pairs, single=("sizes",), check=check,
    keep_run=keep_run,
)
