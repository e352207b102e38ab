"""Verdicts on the paper's claims: one estimand, a test and an interval that agree, and words.

The estimand of every claim is the **mean paired difference** ``a - b`` (one pair per unit: a
test case, a seed, a cross-validation replicate or a task). Its direction, its p-value, its
interval and its minimum detectable effect all answer that one question. The pieces, from the
smallest up:

* :class:`SignFlip` — the **sign-flip permutation test** of the mean (Fisher; Good 2005): under
  the null of a distribution symmetric about ``delta``, the signs of ``d - delta`` are
  exchangeable. Two-sided p = the share of sign vectors whose ``|sum(s * (d - delta))|`` reaches
  the observed ``|sum(d - delta)|``. Exact (all ``2**n`` sign vectors) up to :data:`EXACT_MAX_N`
  units; above, :data:`N_FLIPS` random sign vectors drawn with the fixed seed :data:`FLIP_SEED`
  plus the observed one (a valid Monte Carlo p-value; the same data give the same p). Its
  **interval** is the test inverted: every ``delta`` the test does not reject at the level. So 0
  lies outside the interval exactly when the test rejects: the interval and the verdict agree.
* :class:`CorrectedT` — k-fold cross-validation (replicates are ``(seed, fold)`` pairs whose
  training sets overlap): the **corrected resampled t** of Nadeau & Bengio (2003, Machine Learning
  52:239-281) over the per-replicate mean differences, variance ``(1/J + n_test/n_train) s**2``,
  ``J - 1`` degrees of freedom; its interval is the same t inverted.
* Testable n. The sign-flip test on ``k`` non-zero differences cannot give a p below ``2 / 2**k``;
  below :data:`MIN_PAIRS` (6: 2/64 = 0.031 < 0.05) it cannot decide, and the claim is **not
  testable** (the raw differences are shown instead); the corrected t needs
  :data:`MIN_REPLICATES_CV` replicates.
* Differences with ``|d| <=`` :data:`TOLERANCE` are zero (float rounding is not an effect).
* :func:`mde` — the smallest true effect a two-sided test at level :data:`ALPHA` finds with
  :data:`POWER` power at this n, from the observed SD (paired-t approximation; the sign-flip test
  has the paired t's power asymptotically).
* Equivalence ("no difference" claims): two one-sided tests (TOST, Schuirmann 1987) with the
  margin :data:`EQUIVALENCE_MARGIN` of the metric, done as "the (1 - 2 alpha) interval lies inside
  (-margin, margin)".
* :func:`holm` — Holm's step-down adjustment (Holm 1979); :func:`verdict` — the words.

The paper-wide hierarchy of hypotheses (which p-values are adjusted together, in which order) is
:mod:`medvisionllama.paper.compare`'s.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

#: significance level of every claim (family-wise, see ``compare``)
ALPHA = 0.05
#: confidence level of a claim's interval in a family of one
CONFIDENCE = 0.95
#: |difference| at or below this is zero (float rounding is not an effect)
TOLERANCE = 1e-9
#: fewest non-zero paired differences at which the two-sided sign-flip test can reach p < 0.05
MIN_PAIRS = 6
#: fewest cross-validation replicates for the corrected resampled t
MIN_REPLICATES_CV = 3
#: the sign-flip test enumerates all 2**n sign vectors up to this n, else Monte Carlo
EXACT_MAX_N = 12
#: random sign vectors of the Monte Carlo sign-flip test (plus the observed one)
N_FLIPS = 9999
#: seed of the Monte Carlo sign vectors (fixed: the same data always give the same p)
FLIP_SEED = 2003
#: power at which the minimum detectable effect is stated
POWER = 0.8
#: margin of the equivalence test (TOST) of a "no difference" claim, per metric (metric units)
EQUIVALENCE_MARGIN: dict[str, float] = {"dice": 0.01, "jaccard": 0.01, "accuracy": 0.01, "precision": 0.01,
                                        "recall": 0.01, "hd95": 1.0, "misses": 0.05}
VERDICTS = ("supported", "contradicted", "inconclusive", "not testable")

SIGN_FLIP = "sign-flip permutation test of the mean"
CORRECTED_T = "corrected resampled t (Nadeau & Bengio 2003)"
METHOD_NOTE = (
    f"Method. Estimand: the mean paired difference a - b (|d| <= {TOLERANCE:g} counts as 0). Test and interval: "
    f"the two-sided {SIGN_FLIP} (exact up to {EXACT_MAX_N} units, else {N_FLIPS} sign vectors with the fixed "
    f"seed {FLIP_SEED}) and its inverted interval, or with cross-validation folds the {CORRECTED_T}; "
    f"the interval is at the level the row was tested at, so it excludes 0 exactly when the row is decided. "
    f"Below {MIN_PAIRS} non-zero differences (cross-validation: {MIN_REPLICATES_CV} replicates): 'not testable', "
    f"raw differences shown. mde: the effect found with {POWER:.0%} power at the row's level and n "
    f"(infinite where n cannot reach that level). "
    f"'No difference' claims: TOST with margin {EQUIVALENCE_MARGIN['dice']} (overlap metrics), "
    f"{EQUIVALENCE_MARGIN['hd95']:g} (HD95) or {EQUIVALENCE_MARGIN['misses']} (misses)."
)


@functools.lru_cache(maxsize=64)
def sign_vectors(n: int) -> np.ndarray:
    """The sign vectors of the test, shape (N, n), the observed (all +1) first."""
    if n <= EXACT_MAX_N:
        rows = np.array(list(itertools.product((1.0, -1.0), repeat=n)), dtype=float).reshape(-1, n)
        return rows
    rng = np.random.default_rng(FLIP_SEED)
    rows = rng.choice(np.array([1.0, -1.0]), size=(N_FLIPS, n))
    return np.vstack([np.ones((1, n)), rows])


class SignFlip:
    """The two-sided sign-flip permutation test of the mean of ``d`` and its inverted interval."""

    name = SIGN_FLIP

    def __init__(self, differences: np.ndarray) -> None:
        self.d = np.asarray(differences, dtype=float)
        self.n = len(self.d)
        signs = sign_vectors(self.n)
        self._u = signs @ self.d  # (N,) sum(s * d)
        self._v = signs.sum(axis=1)  # (N,) sum(s)
        self._total = float(self.d.sum())

    @property
    def testable(self) -> bool:
        return int(np.count_nonzero(self.d)) >= MIN_PAIRS

    def p(self, delta: float = 0.0) -> float:
        """Two-sided p of the null "symmetric about ``delta``"."""
        obs = abs(self._total - self.n * delta)
        stat = np.abs(self._u - delta * self._v)
        return float(np.mean(stat >= obs - 1e-12 * (1.0 + obs)))

    def interval(self, level: float) -> tuple[float, float]:
        """Every ``delta`` the test does not reject at ``1 - level``: ``(low, high)``, an infinite
        end where no ``delta`` on that side can be rejected at this level."""
        a = 1.0 - level
        centre = float(self.d.mean())
        span = float(np.ptp(self.d)) + 1.0
        ends = []
        for far in (float(self.d.min()) - span, float(self.d.max()) + span):
            if self.p(far) > a:
                ends.append(math.copysign(math.inf, far - centre))
                continue
            inside, outside = centre, far
            for _ in range(40):  # the bracket shrinks 2**40-fold
                mid = 0.5 * (inside + outside)
                if self.p(mid) > a:
                    inside = mid
                else:
                    outside = mid
            ends.append(inside)
        return ends[0], ends[1]


class CorrectedT:
    """The corrected resampled t of Nadeau & Bengio (2003) over ``J`` replicate mean differences
    whose training sets overlap; ``test_train_ratio`` = n_test / n_train of one replicate."""

    name = CORRECTED_T

    def __init__(self, differences: np.ndarray, test_train_ratio: float) -> None:
        self.d = np.asarray(differences, dtype=float)
        self.n = len(self.d)
        self.ratio = float(test_train_ratio)
        var = float(self.d.var(ddof=1)) if self.n > 1 else math.nan
        self.se = math.sqrt((1.0 / self.n + self.ratio) * var) if self.n > 1 else math.nan

    @property
    def testable(self) -> bool:
        return self.n >= MIN_REPLICATES_CV and np.count_nonzero(self.d) > 0

    def p(self, delta: float = 0.0) -> float:
        diff = float(self.d.mean()) - delta
        if self.se == 0:
            return 1.0 if abs(diff) <= TOLERANCE else 0.0
        return float(2 * stats.t.sf(abs(diff) / self.se, self.n - 1))

    def interval(self, level: float) -> tuple[float, float]:
        half = float(stats.t.ppf(0.5 + level / 2, self.n - 1)) * self.se if level < 1 else math.inf
        return float(self.d.mean()) - half, float(self.d.mean()) + half


def mde(differences: Sequence[float], n: int, *, alpha: float = ALPHA, power: float = POWER,
        inflation: float = 1.0) -> float:
    """Minimum detectable effect: the smallest true mean difference a two-sided test at ``alpha``
    finds with ``power`` at ``n`` units, from the observed SD (t quantiles with n - 1 degrees of
    freedom; ``inflation`` multiplies the variance of the mean, e.g. Nadeau & Bengio's
    ``1 + n * n_test/n_train``). NaN below 2 units."""
    d = np.asarray(differences, dtype=float)
    if n < 2 or len(d) < 2:
        return math.nan
    q = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
    return float(q * d.std(ddof=1) * math.sqrt(inflation / n))


@dataclass(frozen=True)
class Evidence:
    """What paired scores say about the mean of ``a - b``."""

    unit: str  #: what one pair is: "cases", "seeds", "replicates" or "tasks"
    n: int  #: pairs with both scores finite
    n_missing: int  #: pairs left out because a score is missing (NaN or infinite)
    effect: float  #: mean of a - b over the n pairs (NaN when n == 0; 0 within TOLERANCE)
    ci_low: float  #: the 95 % interval (a family of one); NaN when not testable
    ci_high: float
    p_value: float  #: two-sided, unadjusted; NaN when not testable
    test: str  #: the test made, or why none was
    differences: tuple[float, ...] = ()
    mde: float = math.nan
    inference: SignFlip | CorrectedT | None = field(default=None, repr=False, compare=False)

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p_value)

    def interval(self, level: float) -> tuple[float, float]:
        """The interval at ``level`` (NaN when not testable)."""
        if self.inference is None or not self.tested:
            return math.nan, math.nan
        return self.inference.interval(level)


def _clean(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, int]:
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"paired scores need two 1-D arrays of one length, got shapes {a_arr.shape} and {b_arr.shape}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    diff = a_arr[keep] - b_arr[keep]
    diff[np.abs(diff) <= TOLERANCE] = 0.0
    return diff, int((~keep).sum())


def paired_evidence(a: Sequence[float], b: Sequence[float], *, unit: str = "cases",
                    test_train_ratio: float | None = None) -> Evidence:
    """Effect, 95 % interval, p-value and mde of ``a`` against ``b`` (paired element by element).

    ``test_train_ratio`` given: the units are cross-validation replicates, tested with the
    corrected resampled t; else the sign-flip test.
    """
    diff, n_missing = _clean(a, b)
    n = len(diff)
    effect = float(diff.mean()) if n else math.nan
    if n and abs(effect) <= TOLERANCE:
        effect = 0.0
    nonzero = int(np.count_nonzero(diff))
    if test_train_ratio is not None:
        inference: SignFlip | CorrectedT | None = CorrectedT(diff, test_train_ratio) if n else None
        size = mde(diff, n, inflation=1.0 + n * test_train_ratio) if n else math.nan
        floor = f"{MIN_REPLICATES_CV} {unit}"
    else:
        inference = SignFlip(diff) if n else None
        size = mde(diff, n) if nonzero >= MIN_PAIRS else math.nan
        floor = f"{MIN_PAIRS} non-zero differences"
    values = tuple(float(x) for x in diff)
    if inference is None or not inference.testable:
        if n == 0:
            why = f"not testable: no {unit} with both scores"
        elif nonzero == 0:
            why = f"not testable: all {n} differences zero"
        else:
            why = f"not testable: n = {n} {unit}, {nonzero} non-zero differences (needs {floor})"
        return Evidence(unit, n, n_missing, effect, math.nan, math.nan, math.nan, why, values, size, inference)
    p_value = inference.p()
    low, high = inference.interval(CONFIDENCE)
    test = f"{inference.name} over {n} {unit}"
    return Evidence(unit, n, n_missing, effect, low, high, p_value, test, values, size, inference)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (capped at 1, monotone in the raw order); NaN stays NaN and is not
    counted in the number of hypotheses. A p outside [0, 1] is refused (``ValueError``)."""
    p = np.asarray(p_values, dtype=float)
    bad = p[~np.isnan(p) & ((p < 0) | (p > 1))]  # infinities included
    if len(bad):
        raise ValueError(f"p-values must lie in [0, 1], got {bad.tolist()}")
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
    """The level each hypothesis is tested at in Holm's procedure at ``alpha``, for its interval:
    a rejected one at its step, ``alpha / (m - rank)``; the others at ``alpha / |not rejected|``
    (Strassburger & Bretz 2008), where none of them can be rejected. NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = holm(p)
    levels = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    order = tested[np.argsort(p[tested], kind="stable")]
    rejected = [i for i in order if adjusted[i] < alpha]
    for rank, index in enumerate(order):
        levels[index] = alpha / (m - rank) if adjusted[index] < alpha else alpha / max(1, m - len(rejected))
    return levels


def verdict(effect: float, p_adjusted: float, expected: int, *, lower_is_better: bool = False,
            alpha: float = ALPHA, interval: tuple[float, float] | None = None, margin: float | None = None) -> str:
    """The verdict on a claim that ``a`` is better (``expected = 1``), worse (``-1``) or no
    different (``0``) than ``b``; ``effect`` = mean of ``a - b``, ``p_adjusted`` its adjusted p.

    A difference claim: ``supported`` / ``contradicted`` when ``p_adjusted < alpha`` and the
    effect points the claimed / the opposite way; ``inconclusive`` otherwise (an effect of 0
    included). A "no difference" claim with ``interval`` (at 1 - 2 x its level) and ``margin``:
    ``supported`` when the interval lies inside (-margin, margin) (TOST), ``contradicted`` when it
    lies outside [-margin, margin], else ``inconclusive``; without them only a significant
    difference can be shown (``contradicted``). NaN p: ``not testable``.
    """
    if expected not in (-1, 0, 1):
        raise ValueError(f"expected must be -1, 0 or 1, got {expected!r}")
    if math.isnan(p_adjusted) or math.isnan(effect):
        return "not testable"
    if expected == 0 and interval is not None and margin is not None:
        low, high = interval
        if -margin < low and high < margin:
            return "supported"
        if high < -margin or low > margin:
            return "contradicted"
        return "inconclusive"
    if p_adjusted >= alpha or abs(effect) <= TOLERANCE:
        return "inconclusive"
    better = -effect if lower_is_better else effect
    observed = 1 if better > 0 else -1
    if expected == 0:
        return "contradicted"
    return "supported" if observed == expected else "contradicted"


def tost_p(evidence: Evidence, margin: float) -> float:
    """p of the equivalence test (TOST) that the mean difference lies inside (-margin, margin):
    the larger of the two one-sided p-values, each half the two-sided p at the margin (so
    ``p < a`` exactly when the ``1 - 2a`` interval lies inside the margins); 1 when the effect
    itself is outside; NaN when not testable."""
    if not evidence.tested or evidence.inference is None:
        return math.nan
    if abs(evidence.effect) >= margin:
        return 1.0
    return min(1.0, max(evidence.inference.p(-margin), evidence.inference.p(margin)) / 2)
