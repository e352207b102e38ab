"""``results/metrics.json`` for ``dvc metrics show``: a nested summary, JSON floats, NaN -> null.

Layout: ``{experiment: {task: {run group: {metric: value}}}}`` where the run group is the model
key, with ``/attention`` and ``/size`` appended when the experiment varies them; the metrics are
``{metric}_mean`` and ``{metric}_std`` for dice, jaccard, precision, recall, accuracy, hd95, plus
``params_m``, ``train_hours``, ``n_cases``, ``n_seeds``. This is the per-task detail; DVC does
not show it (one row of over a thousand columns).

``dvc metrics show`` reads the **headline** summary instead (:func:`headline_metrics`): one small
file per experiment and run group, ``{experiment}/{group}.json`` holding ``dice``, ``hd95``
(means over the experiment's tasks of the per-task means), ``n_cases`` (test cases, all tasks and
seeds), ``n_tasks`` and ``n_seeds``. Every file has the same five keys, so DVC prints one row per
experiment and group with five columns, and ``dvc metrics diff`` one line per changed value.
`mvl share` writes these files into the committed summary folder (see
:mod:`medvisionllama.share`).
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


def _group(spec_attention: tuple | list, spec_sizes: tuple | list, row: Any) -> str:
    """The run group of a summary row: the model, ``/attention`` and ``/size`` when they vary."""
    group = str(row["model"])
    if len(spec_attention) > 1:
        group += f"/{row['attention']}"
    if len(spec_sizes) > 1:
        group += f"/{row['size']}"
    return group


def metrics_summary(scored: list[ExperimentScores]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for experiment in scored:
        spec, s = experiment.spec, experiment.summary
        exp: dict[str, Any] = {}
        for _, row in s.iterrows():
            group = _group(spec.attention, spec.sizes, row)
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


#: the keys of every headline file, in the order DVC shows them
HEADLINE_KEYS = ("dice", "hd95", "n_cases", "n_tasks", "n_seeds")


def headline_metrics(scored: list[ExperimentScores]) -> dict[str, dict[str, Any]]:
    """``{"{experiment}/{group}.json": {dice, hd95, n_cases, n_tasks, n_seeds}}``.

    ``dice``/``hd95``: mean over the experiment's tasks of each task's mean (NaN tasks skipped,
    None when all are NaN); ``n_cases``: test cases summed over tasks (pooled over seeds);
    ``n_seeds``: the fewest seeds of any task (a group is as replicated as its weakest task).
    """
    out: dict[str, dict[str, Any]] = {}
    for experiment in scored:
        spec, s = experiment.spec, experiment.summary
        groups: dict[str, list[Any]] = {}
        for _, row in s.iterrows():
            groups.setdefault(_group(spec.attention, spec.sizes, row), []).append(row)
        for group, rows in groups.items():
            def task_mean(metric: str) -> Any:
                values = [float(r[f"{metric}_mean"]) for r in rows if not math.isnan(float(r[f"{metric}_mean"]))]
                return _jsonable(sum(values) / len(values)) if values else None

            out[f"{spec.name}/{group}.json"] = {
                "dice": task_mean("dice"), "hd95": task_mean("hd95"),
                "n_cases": int(sum(int(r["n_cases"]) for r in rows)), "n_tasks": len(rows),
                "n_seeds": int(min(int(r["n_seeds"]) for r in rows)),
            }
    return out
