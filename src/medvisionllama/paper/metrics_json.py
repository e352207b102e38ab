"""``results/metrics.json`` for ``dvc metrics show``: a nested summary, JSON floats, NaN -> null.

Layout: ``{experiment: {task: {run group: {metric: value}}}}`` where the run group is the model
key, with ``/attention`` and ``/size`` appended when the experiment varies them; the metrics are
``{metric}_mean`` and ``{metric}_std`` for dice, jaccard, precision, recall, accuracy, hd95, plus
``params_m``, ``train_hours``, ``n_cases``, ``n_seeds``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


from medvisionllama.io_utils import write_json_atomic
from medvisionllama.paper.summary import ExperimentScores
from medvisionllama.vocabulary import PAPER_METRICS as METRICS


def _jsonable(value: Any) -> Any:
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return value
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else round(value, 6)


def metrics_summary(scored: list[ExperimentScores]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for experiment in scored:
        spec, s = experiment.spec, experiment.summary
        exp: dict[str, Any] = {}
        for _, row in s.iterrows():
            group = row["model"]
            if len(spec.attention) > 1:
                group += f"/{row['attention']}"
            if len(spec.sizes) > 1:
                group += f"/{row['size']}"
            values = {f"{m}_{k}": _jsonable(row[f"{m}_{k}"]) for m in METRICS for k in ("mean", "std")}
            values.update(params_m=_jsonable(row["params_total"] / 1e6), train_hours=_jsonable(row["train_seconds"] / 3600),
                          n_cases=int(row["n_cases"]), n_seeds=int(row["n_seeds"]))
            exp.setdefault(row["task"], {})[group] = values
        out[spec.name] = exp
    return out


def write_metrics_json(scored: list[ExperimentScores], path: str | Path) -> dict[str, Any]:
    """Write :func:`metrics_summary` to ``path`` (atomic, stable key order); returns it."""
    summary = metrics_summary(scored)
    write_json_atomic(path, summary)
    return summary
