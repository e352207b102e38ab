"""Per-case scores of an experiment's runs, their summaries and the paired test.

Summaries over test cases and seeds: **mean** = mean over seeds of each seed's mean over test
cases (every seed weighs the same); **std** = sample standard deviation (ddof = 1) over all
(seed, case) scores pooled, i.e. the spread of single-case scores, as the paper's ± reports over
test cases. With one case the std is NaN (shown without ±).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from medvisionllama.errors import InputError
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.vocabulary import MEAN_CLASS, PAPER_METRICS, RUN_KEY_COLUMNS, RunKey

RUN_KEYS = list(RUN_KEY_COLUMNS)
GROUP_KEYS = RUN_KEYS[:-1]  # a run without its seed
#: below this many pairs the Wilcoxon signed-rank test cannot reach p < 0.05 (two-sided, exact)
MIN_PAIRS_WILCOXON = 6


def case_scores(long: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """The per-case summary rows (``class_name == "mean"``) of the runs ``spec`` needs.

    Raises :class:`InputError` naming every missing run.
    """
    rows = long[long["class_name"] == MEAN_CLASS].copy()
    rows["size"] = rows["size"].astype(str)
    rows["seed"] = rows["seed"].astype(int)
    required = spec.required_runs()
    have = set(map(tuple, rows[RUN_KEYS].drop_duplicates().itertuples(index=False, name=None)))
    missing = [r for r in required if tuple(r) not in have]
    if missing:
        shown = ", ".join(r.path() for r in missing[:12])
        more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        raise InputError(f"experiment {spec.name!r} ({spec.kind}): {len(missing)} of {len(required)} runs "
                         f"missing from the long table: {shown}{more}")
    wanted = pd.DataFrame(required, columns=RUN_KEYS)
    return rows.merge(wanted, on=RUN_KEYS, how="inner").reset_index(drop=True)


def summarize(scores: pd.DataFrame, metrics: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Mean and std of each metric per ``task, model, attention, size`` (see the module docstring).

    Columns: the group keys, then per metric ``{metric}_mean, {metric}_std``, then ``n_cases``
    (pooled over seeds), ``n_seeds``, ``params_total``, ``train_seconds`` (means over seeds).
    """
    out = []
    for key, group in scores.groupby(GROUP_KEYS, sort=False):
        row: dict[str, object] = dict(zip(GROUP_KEYS, key))
        for metric in metrics:
            seed_means = group.groupby("seed")[metric].mean()
            values = group[metric].dropna()
            row[f"{metric}_mean"] = float(seed_means.mean()) if seed_means.notna().any() else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        row["n_cases"] = int(len(group))
        row["n_seeds"] = int(group["seed"].nunique())
        per_seed = group.groupby("seed")[["params_total", "train_seconds"]].first()
        row["params_total"] = float(per_seed["params_total"].mean())
        row["train_seconds"] = float(per_seed["train_seconds"].mean())
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


def paired_test(a: np.ndarray, b: np.ndarray) -> tuple[float, str]:
    """Two-sided p-value that paired scores ``a`` and ``b`` differ, and the test used.

    Pairs with a NaN are dropped. n >= 6: Wilcoxon signed-rank (scipy); 2 <= n < 6: paired
    t-test (Wilcoxon cannot reach p < 0.05 there); n < 2: NaN. All differences zero: p = 1.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    if n < 2:
        return math.nan, f"none (n={n})"
    if np.allclose(a, b, rtol=0, atol=1e-12):
        return 1.0, f"none: all {n} differences zero"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if n >= MIN_PAIRS_WILCOXON:
            return float(stats.wilcoxon(a, b).pvalue), f"Wilcoxon signed-rank (n={n})"
        return float(stats.ttest_rel(a, b).pvalue), f"paired t-test (n={n})"


def paired_scores(scores: pd.DataFrame, metric: str, a: dict[str, object], b: dict[str, object]) -> tuple[np.ndarray, np.ndarray]:
    """Scores of two run groups (``a``/``b``: task, model, attention, size) paired by seed and case."""
    def pick(sel: dict[str, object]) -> pd.Series:
        mask = np.ones(len(scores), dtype=bool)
        for key, value in sel.items():
            mask &= (scores[key] == value).to_numpy()
        return scores[mask].set_index(["seed", "case_id"])[metric]

    sa, sb = pick(a), pick(b)
    joined = pd.concat([sa.rename("a"), sb.rename("b")], axis=1, join="inner")
    return joined["a"].to_numpy(), joined["b"].to_numpy()
