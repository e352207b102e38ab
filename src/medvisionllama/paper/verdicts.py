"""Verdicts on the paper's claims: an effect with a confidence interval, a test that can decide
at its n, a family-wise correction, and one of three words.

The pieces, from the smallest up:

* :func:`paired_evidence` — for paired scores ``a`` and ``b`` (one pair per unit: a test case, a
  seed or a task), the **effect** (mean of ``a - b``), its **95 % confidence interval** (seeded
  percentile bootstrap over the units, scipy's :func:`scipy.stats.bootstrap`) and a two-sided
  **Wilcoxon signed-rank test** (scipy's :func:`scipy.stats.wilcoxon`). Units with a missing
  value in either score are counted in ``n_missing``, never silently dropped.
* A test only where it can decide. The exact two-sided Wilcoxon test on ``n`` non-zero
  differences cannot give a p-value below ``2 / 2**n``; below :data:`MIN_PAIRS` (6, where that
  bound is 0.031 < 0.05) no p-value is computed and the evidence says "too few <units>". Zero
  differences carry no sign and are left out of the test (Wilcoxon's original treatment,
  ``zero_method="wilcox"``), so a pair of identical models gets "all differences zero", never
  the p = 0 a t-test gives for zero variance.
* :func:`holm` — Holm's step-down adjustment (Holm 1979, Scand. J. Statist. 6:65–70) of the
  p-values of one claims table; claims without a p-value are not counted in the family.
* :func:`verdict` — **supported** (adjusted p < alpha, effect in the claimed direction),
  **contradicted** (adjusted p < alpha, opposite direction) or **inconclusive** (anything else:
  not significant, too few units, no test). A claim of *no* difference (the paper prints equal
  numbers) can only be contradicted or stay inconclusive: a difference test cannot show equality.

Which units to pair is the caller's choice and a scientific one (DESIGN.md, "Verdicts"): test
cases within one run for a per-task claim with one seed; per-seed means when there are several
seeds (seeds are the replicates; seeds x cases are not independent); per-task means for the
paper's cross-task claims (Demšar 2006, JMLR 7:1–30).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

#: significance level of every claims table
ALPHA = 0.05
#: confidence level of every effect's interval
CONFIDENCE = 0.95
#: fewest non-zero paired differences at which a two-sided exact Wilcoxon test can reach p < 0.05
MIN_PAIRS = 6
#: bootstrap resamples for the effect's confidence interval
N_RESAMPLES = 9999
VERDICTS = ("supported", "contradicted", "inconclusive")

TEST_NAME = "Wilcoxon signed-rank, two-sided"
METHOD_NOTE = (
    f"Effect: mean paired difference with a {CONFIDENCE:.0%} percentile-bootstrap CI ({N_RESAMPLES} "
    f"resamples, seeded). Test: {TEST_NAME} (scipy), only with at least {MIN_PAIRS} non-zero differences "
    f"(below that no p-value can fall under {ALPHA}); Holm correction over the claims of this table; "
    f"verdict supported / contradicted when the adjusted p < {ALPHA} and the effect points the claimed / "
    f"opposite way, inconclusive otherwise."
)


@dataclass(frozen=True)
class Evidence:
    """What paired scores say about ``a - b``."""

    unit: str  #: what one pair is: "cases", "seeds" or "tasks"
    n: int  #: pairs with both scores finite
    n_missing: int  #: pairs left out because a score is missing (NaN or infinite)
    effect: float  #: mean of a - b over the n pairs (NaN when n == 0)
    ci_low: float
    ci_high: float
    p_value: float  #: two-sided, unadjusted; NaN when no test was made
    test: str  #: the test made, or why none was

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p_value)


def _interval(diff: np.ndarray, seed: int) -> tuple[float, float]:
    if len(diff) < 2:
        return math.nan, math.nan
    if np.ptp(diff) == 0:  # every resample has the same mean
        return float(diff[0]), float(diff[0])
    result = stats.bootstrap(
        (diff,), np.mean, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
        method="percentile", rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_evidence(a: Sequence[float], b: Sequence[float], *, unit: str = "cases", seed: int = 0) -> Evidence:
    """Effect, confidence interval and (where it can decide) a Wilcoxon test of ``a`` against ``b``.

    ``a`` and ``b`` are paired element by element (same length). ``seed`` makes the bootstrap
    repeatable; the same scores and seed always give the same interval.
    """
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"paired scores need two 1-D arrays of one length, got shapes {a_arr.shape} and {b_arr.shape}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    diff = a_arr[keep] - b_arr[keep]
    n, n_missing = int(keep.sum()), int((~keep).sum())
    effect = float(diff.mean()) if n else math.nan
    low, high = _interval(diff, seed)
    nonzero = int(np.count_nonzero(diff))
    p_value = math.nan
    if n == 0:
        test = f"no test: no {unit} with both scores"
    elif nonzero == 0:
        test = f"no test: all {n} differences zero"
    elif nonzero < MIN_PAIRS:
        test = f"no test: too few {unit} ({nonzero} non-zero differences < {MIN_PAIRS})"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (RuntimeWarning, UserWarning))
            p_value = float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
        test = f"{TEST_NAME} over {nonzero} {unit}"
    return Evidence(unit, n, n_missing, effect, low, high, p_value, test)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (capped at 1, monotone in the raw order); NaN stays NaN and is not
    counted in the number of hypotheses."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def verdict(effect: float, p_adjusted: float, expected: int, *, lower_is_better: bool = False,
            alpha: float = ALPHA) -> str:
    """``supported``, ``contradicted`` or ``inconclusive`` for a claim that ``a`` is better
    (``expected = 1``), worse (``-1``) or no different (``0``) than ``b``, where ``effect`` is
    the mean of ``a - b`` and ``p_adjusted`` its Holm-adjusted p-value."""
    if expected not in (-1, 0, 1):
        raise ValueError(f"expected must be -1, 0 or 1, got {expected!r}")
    if math.isnan(p_adjusted) or math.isnan(effect) or p_adjusted >= alpha or effect == 0:
        return "inconclusive"
    better = -effect if lower_is_better else effect
    observed = 1 if better > 0 else -1
    if expected == 0:
        return "contradicted"
    return "supported" if observed == expected else "contradicted"
