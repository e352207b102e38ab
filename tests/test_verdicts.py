"""The statistics behind every claims table: one estimand, its test and interval, Holm, verdicts."""

import math

import numpy as np
import pytest
from scipy import stats

from medvisionllama.paper.verdicts import (
    EXACT_MAX_N, MIN_PAIRS, MIN_REPLICATES_CV, TOLERANCE, CorrectedT, SignFlip, holm, holm_levels, mde,
    paired_evidence, tost_p, verdict,
)


def test_too_few_pairs_is_not_testable_and_keeps_the_differences():
    ev = paired_evidence([0.6, 0.7], [0.5, 0.5])
    assert math.isnan(ev.p_value) and not ev.tested
    assert "not testable: n = 2 cases" in ev.test and ev.n == 2
    assert ev.effect == pytest.approx(0.15) and ev.differences == pytest.approx((0.1, 0.2))
    assert math.isnan(ev.ci_low) and math.isnan(ev.ci_high)  # no interval that pretends a level


def test_the_smallest_p_is_two_over_two_to_the_n():
    below = paired_evidence(np.arange(1, MIN_PAIRS) * 0.1, np.zeros(MIN_PAIRS - 1))
    at = paired_evidence(np.arange(1, MIN_PAIRS + 1) * 0.1, np.zeros(MIN_PAIRS))
    assert not below.tested
    assert at.p_value == pytest.approx(2 / 2**MIN_PAIRS) and at.p_value < 0.05
    # equal non-zero differences: the exact sign-flip p, never the p = 0 a t-test gives for zero variance
    ev = paired_evidence(np.arange(10) + 1.0, np.arange(10) + 0.0)
    assert ev.p_value == pytest.approx(2 / 1024)


def test_the_sign_flip_p_matches_a_brute_force_enumeration():
    d = np.array([0.3, -0.1, 0.25, 0.05, -0.02, 0.4, 0.12, -0.3])
    signs = np.array(np.meshgrid(*[[1, -1]] * len(d))).reshape(len(d), -1).T
    brute = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12)
    assert SignFlip(d).p() == pytest.approx(brute)


def test_zero_and_float_rounding_differences_are_zero():
    ev = paired_evidence([0.5] * 8, [0.5] * 8)
    assert not ev.tested and "all 8 differences zero" in ev.test and ev.effect == 0
    a = np.full(12, 0.1 + 0.2)
    ev = paired_evidence(a, np.full(12, 0.3))  # 5.5e-17 apart: rounding, not an effect
    assert ev.effect == 0.0 and not ev.tested
    assert verdict(8.5e-18, 0.001, 1) == "inconclusive" and TOLERANCE > 1e-12
    ev = paired_evidence([0.5] * 4 + [0.6, 0.7, 0.8, 0.9, 1.0], [0.5] * 9)
    assert ev.n == 9 and not ev.tested and "5 non-zero" in ev.test


def test_missing_values_are_counted_not_hidden():
    a = [0.5, np.nan, 0.7, 0.8, 0.9, 0.6, 0.7, 0.8]
    b = [0.4, 0.3, np.inf, 0.6, 0.7, 0.5, 0.5, 0.6]
    ev = paired_evidence(a, b)
    assert ev.n == 6 and ev.n_missing == 2


@pytest.mark.parametrize("n", [7, 15])  # exact and Monte Carlo
def test_interval_is_the_test_inverted(n):
    """0 (and any delta) lies outside the interval exactly when the test rejects it: the interval
    and the verdict cannot disagree, at any level."""
    assert (n <= EXACT_MAX_N) == (n == 7)
    rng = np.random.default_rng(n)
    for _ in range(20):
        d = rng.normal(0.03, 0.05, n)
        test = SignFlip(d)
        for level in (0.95, 0.99):
            low, high = test.interval(level)
            assert low < d.mean() < high
            for delta in [x for x in (0.0, low - 1e-6, high + 1e-6, 0.5 * (low + d.mean()), -1.0, 1.0)
                          if math.isfinite(x)]:
                assert (test.p(delta) <= 1 - level) == (delta < low or delta > high)
    # repeatable: the Monte Carlo signs have a fixed seed
    assert SignFlip(d).interval(0.95) == SignFlip(d).interval(0.95)


def test_an_unreachable_level_gives_an_infinite_interval():
    test = SignFlip(np.arange(1, 7) * 0.1)  # smallest p 2/64
    assert test.interval(1 - 0.01) == (-math.inf, math.inf)


def test_corrected_resampled_t():
    d = np.array([0.02, 0.03, 0.01, 0.04, 0.025])
    test = CorrectedT(d, 0.25)
    se = math.sqrt((1 / 5 + 0.25) * d.var(ddof=1))
    assert test.p() == pytest.approx(2 * stats.t.sf(d.mean() / se, 4))
    low, high = test.interval(0.95)
    assert high - d.mean() == pytest.approx(stats.t.ppf(0.975, 4) * se)
    assert (test.p() < 0.05) == (low > 0)
    ev = paired_evidence(d, np.zeros(5), unit="replicates", test_train_ratio=0.25)
    assert ev.tested and "Nadeau" in ev.test and ev.p_value == pytest.approx(test.p())
    assert not paired_evidence(d[: MIN_REPLICATES_CV - 1], np.zeros(MIN_REPLICATES_CV - 1),
                               unit="replicates", test_train_ratio=0.25).tested


def test_mde_is_the_paired_t_power_solution():
    d = np.random.default_rng(0).normal(0, 0.1, 20)
    effect = mde(d, 20)
    sd = d.std(ddof=1)
    crit = stats.t.ppf(0.975, 19)
    power = stats.nct.sf(crit, 19, effect / sd * math.sqrt(20))
    assert power == pytest.approx(0.8, abs=0.02)


def test_equivalence_test():
    d = np.random.default_rng(1).normal(0.001, 0.002, 30)
    ev = paired_evidence(d, np.zeros(30))
    p = tost_p(ev, 0.01)
    assert p < 0.05
    low, high = ev.interval(0.90)
    assert -0.01 < low and high < 0.01
    assert verdict(ev.effect, p, 0, interval=(low, high), margin=0.01) == "supported"
    far = paired_evidence(d + 0.05, np.zeros(30))
    assert tost_p(far, 0.01) == 1.0
    assert verdict(far.effect, 1.0, 0, interval=far.interval(0.9), margin=0.01) == "contradicted"


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="one length"):
        paired_evidence([1.0, 2.0], [1.0])


def test_holm_matches_the_step_down_definition_and_skips_nan():
    p = [0.01, np.nan, 0.04, 0.03, 0.5]
    adj = holm(p)
    # m = 4 tested: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, 0.09 (monotone), 0.5
    assert adj[0] == pytest.approx(0.04)
    assert math.isnan(adj[1])
    assert adj[3] == pytest.approx(0.09) and adj[2] == pytest.approx(0.09)
    assert adj[4] == pytest.approx(0.5)
    assert holm([0.9, 0.8])[0] == 1.0


@pytest.mark.parametrize("bad", [[-0.1, 0.2], [0.3, 1.5], [np.inf]])
def test_holm_refuses_p_outside_the_unit_interval(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm(bad)


def test_holm_levels_agree_with_holm():
    rng = np.random.default_rng(2)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 8)) ** rng.uniform(1, 3)
        rejected, levels = holm(p) < 0.05, holm_levels(p)
        assert ((p <= levels) == rejected).all()


def test_verdict_words():
    assert verdict(0.1, 0.01, 1) == "supported"
    assert verdict(-0.1, 0.01, 1) == "contradicted"
    assert verdict(0.1, 0.2, 1) == "inconclusive"
    assert verdict(0.1, math.nan, 1) == "not testable"
    # lower is better (HD95): a negative a - b is a; claimed better
    assert verdict(-3.0, 0.001, 1, lower_is_better=True) == "supported"
    assert verdict(3.0, 0.001, 1, lower_is_better=True) == "contradicted"
    # a claim of no difference without an equivalence interval: only a difference can be shown
    assert verdict(0.1, 0.001, 0) == "contradicted"
    assert verdict(0.1, 0.5, 0) == "inconclusive"
    with pytest.raises(ValueError):
        verdict(0.1, 0.01, 2)
