"""Per-case scores of an experiment's runs, their summaries, and the paired scores a claim tests.

Summaries over test cases and seeds: **mean** = mean over seeds of each seed's plain mean over
test cases (every seed weighs the same; a miss counts with its worst-case value, see
``evaluation/metrics.py``); **std** = sample standard deviation (ddof = 1) over all (seed, case)
scores pooled, i.e. the spread of single-case scores, as the paper's ± reports over test cases.
With one case the std is NaN (shown without ±). Beside them, per metric, how many of the cell's
(seed, case) scores were **penalised** (a class missed or falsely predicted, scored with the worst
value) and **undefined** (the formula is 0/0 because every class is absent in both masks, scored
with the best value; or the metric was not computed). A metric that was not computed for some
case has a NaN mean: shown as n/a, never averaged over the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.vocabulary import MEAN_CLASS, PAPER_METRICS, RUN_KEY_COLUMNS, RunKey

RUN_KEYS = list(RUN_KEY_COLUMNS)
GROUP_KEYS = RUN_KEYS[:-1]  # a run without its seed
#: per-case statuses counted as undefined: the formula's 0/0 (scored as the best value) or not computed
UNDEFINED = ("empty", "skipped")


def case_scores(long: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """The per-case summary rows (``class_name == "mean"``) of the runs ``spec`` needs. With
    cross-validation these are the out-of-fold rows of each group's K fold runs: every case once
    per seed, so a cell's mean and its paired tests pool them.

    Raises :class:`InputError` naming every missing run.
    """
    rows = long[long["class_name"] == MEAN_CLASS].copy()
    rows["size"] = rows["size"].astype(str)
    rows["seed"] = rows["seed"].astype(int)
    required = spec.required_runs()
    have = set(rows["run"].astype(str))  # the run path: with split.folds, one run per fold (seed{s}-fold{k})
    missing = [r for r in required if r.path() not in have]
    if missing:
        shown = ", ".join(r.path() for r in missing[:12])
        more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        raise InputError(f"experiment {spec.name!r} ({spec.kind}): {len(missing)} of {len(required)} runs "
                         f"missing from the long table: {shown}{more}")
    wanted = {r.path() for r in required}
    return rows[rows["run"].astype(str).isin(wanted)].reset_index(drop=True)


def summarize(scores: pd.DataFrame, metrics: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Mean and std of each metric per ``task, model, attention, size`` (see the module docstring).

    Columns: the group keys, then per metric ``{metric}_mean, {metric}_std, {metric}_n_penalised,
    {metric}_n_undefined`` (counts of (seed, case) scores by their status), then ``n_cases``
    (pooled over seeds), ``n_seeds``, ``params_total``, ``train_seconds`` (means over seeds) and
    ``device`` (the devices the seeds were trained on, comma-separated).
    """
    out = []
    for key, group in scores.groupby(GROUP_KEYS, sort=False):
        row: dict[str, object] = dict(zip(GROUP_KEYS, key))
        for metric in metrics:
            by_seed = group.groupby("seed")[metric]
            seed_means = by_seed.mean()
            seed_means[by_seed.count() < by_seed.size()] = math.nan  # a skipped case is not averaged away
            values = group[metric]
            row[f"{metric}_mean"] = float(seed_means.mean(skipna=False))
            row[f"{metric}_std"] = float(values.std(ddof=1, skipna=False)) if len(values) > 1 else math.nan
            status = group[f"{metric}_status"].astype(str)
            row[f"{metric}_n_penalised"] = int((status == "penalised").sum())
            row[f"{metric}_n_undefined"] = int(status.isin(UNDEFINED).sum())
        row["n_cases"] = int(len(group))
        row["n_seeds"] = int(group["seed"].nunique())
        per_seed = group.groupby("seed")[["params_total", "train_seconds", "device"]].first()
        row["params_total"] = float(per_seed["params_total"].mean())
        row["train_seconds"] = float(per_seed["train_seconds"].mean())
        row["device"] = ", ".join(sorted(set(per_seed["device"].astype(str))))
        out.append(row)
    return pd.DataFrame(out)


def lookup(summary: pd.DataFrame, task: str, model: str, attention: str, size: str) -> pd.Series:
    hit = summary[(summary["task"] == task) & (summary["model"] == model)
                  & (summary["attention"] == attention) & (summary["size"] == size)]
    if hit.empty:
        raise InputError(f"no runs of {RunKey(task, model, attention, size, 0).group()}")
    return hit.iloc[0]


@dataclass(frozen=True)
class ExperimentScores:
    """An experiment's per-case scores and their summary, computed once (:func:`score_experiment`)
    and shared by its table, comparison, claims, metrics summary and figures."""

    spec: ExperimentSpec
    scores: pd.DataFrame  #: :func:`case_scores`
    summary: pd.DataFrame  #: :func:`summarize` of every metric

    def cell(self, task: str, model: str, attention: str, size: str) -> pd.Series:
        """One summary row (see :func:`lookup`)."""
        return lookup(self.summary, task, model, attention, size)


def score_experiment(long: pd.DataFrame, spec: ExperimentSpec) -> ExperimentScores:
    """The per-case scores of ``spec``'s runs and their summary over every metric."""
    scores = case_scores(long, spec)
    return ExperimentScores(spec, scores, summarize(scores, list(PAPER_METRICS)))


def _select(scores: pd.DataFrame, sel: dict[str, object]) -> pd.DataFrame:
    mask = np.ones(len(scores), dtype=bool)
    for key, value in sel.items():
        mask &= (scores[key] == value).to_numpy()
    return scores[mask]


def _replicate_keys(scores: pd.DataFrame) -> list[str]:
    """``["seed", "fold"]`` when the scores come from cross-validation folds (a ``fold`` column
    with values), else ``["seed"]`` (the single split; no ``fold`` column counts as it)."""
    return ["seed", "fold"] if "fold" in scores.columns and scores["fold"].notna().any() else ["seed"]


def paired_replicates(scores: pd.DataFrame, metric: str, a: dict[str, object],
                      b: dict[str, object]) -> tuple[np.ndarray, np.ndarray, str, float | None]:
    """Paired scores of two run groups (``a``/``b``: task, model, attention, size), their unit and,
    for cross-validation, n_test / n_train of one replicate (None otherwise).

    * Cross-validation (a ``fold`` column with values): each ``(seed, fold)`` replicate's mean over
      its test cases, paired by replicate (unit ``replicates``); n_test / n_train = 1 / (K - 1)
      for K folds (the corrected resampled t of Nadeau & Bengio needs it).
    * Several seeds, one split: each seed's mean over its test cases, paired by seed (unit
      ``seeds``): seeds are the replicates; the cases of one seed are not independent evidence
      about an architecture.
    * One seed: the test cases, paired by case (unit ``cases``): the claim is then about two trained
      networks, training variability not in the analysis.

    A replicate whose metric is NaN for some case has a NaN mean (counted as missing downstream).
    """
    sa, sb = _select(scores, a), _select(scores, b)
    keys = _replicate_keys(pd.concat([sa, sb]))
    if keys == ["seed", "fold"] or max(sa["seed"].nunique(), sb["seed"].nunique()) > 1:
        def means(frame: pd.DataFrame) -> pd.Series:
            grouped = frame.groupby(keys, dropna=False)[metric]
            out = grouped.mean()
            out[grouped.count() < grouped.size()] = math.nan
            return out

        joined = pd.concat([means(sa).rename("a"), means(sb).rename("b")], axis=1, join="inner")
        if keys == ["seed", "fold"]:
            folds = int(pd.concat([sa, sb])["fold"].nunique())
            return joined["a"].to_numpy(), joined["b"].to_numpy(), "replicates", 1.0 / max(1, folds - 1)
        return joined["a"].to_numpy(), joined["b"].to_numpy(), "seeds", None
    ia, ib = sa.set_index(["seed", "case_id"])[metric], sb.set_index(["seed", "case_id"])[metric]
    joined = pd.concat([ia.rename("a"), ib.rename("b")], axis=1, join="inner")
    return joined["a"].to_numpy(), joined["b"].to_numpy(), "cases", None


def paired_units(scores: pd.DataFrame, metric: str, a: dict[str, object],
                 b: dict[str, object]) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`paired_replicates` without the cross-validation ratio."""
    x, y, unit, _ = paired_replicates(scores, metric, a, b)
    return x, y, unit
