"""The statistics behind every claims table: effect and CI, a test that can decide, Holm, verdicts."""

import math

import numpy as np
import pytest
from scipy import stats

from medvisionllama.paper.verdicts import MIN_PAIRS, holm, paired_evidence, verdict


def test_too_few_pairs_gives_no_p_value_but_an_effect():
    ev = paired_evidence([0.6, 0.7], [0.5, 0.5])
    assert math.isnan(ev.p_value) and not ev.tested
    assert "too few cases" in ev.test and ev.n == 2
    assert ev.effect == pytest.approx(0.15)
    assert ev.ci_low <= ev.effect <= ev.ci_high


def test_equal_differences_never_give_p_zero():
    # the old paired t-test said p = 0 here (zero variance of the differences)
    ev = paired_evidence([0.6, 0.7], [0.5, 0.6])
    assert math.isnan(ev.p_value)
    ev = paired_evidence(np.arange(10) + 1.0, np.arange(10) + 0.0)
    assert ev.tested and ev.p_value > 0.0
    assert ev.ci_low == ev.ci_high == pytest.approx(1.0)


def test_all_zero_differences_are_not_a_test():
    ev = paired_evidence([0.5] * 8, [0.5] * 8)
    assert not ev.tested and "all 8 differences zero" in ev.test and ev.effect == 0


def test_minimum_n_is_where_wilcoxon_can_decide():
    # with MIN_PAIRS - 1 all-positive differences the smallest exact p is above 0.05; with MIN_PAIRS below
    below = stats.wilcoxon(np.arange(1, MIN_PAIRS) * 0.1).pvalue
    at = stats.wilcoxon(np.arange(1, MIN_PAIRS + 1) * 0.1).pvalue
    assert below > 0.05 > at
    assert paired_evidence(np.arange(1, MIN_PAIRS + 1) * 0.1, np.zeros(MIN_PAIRS)).p_value == pytest.approx(at)
    assert not paired_evidence(np.arange(1, MIN_PAIRS) * 0.1, np.zeros(MIN_PAIRS - 1)).tested


def test_zero_differences_do_not_count_towards_n():
    a = [0.5] * 4 + [0.6, 0.7, 0.8, 0.9, 1.0]
    ev = paired_evidence(a, [0.5] * 9)
    assert ev.n == 9 and not ev.tested and "5 non-zero" in ev.test


def test_missing_values_are_counted_not_hidden():
    a = [0.5, np.nan, 0.7, 0.8, 0.9, 0.6, 0.7, 0.8]
    b = [0.4, 0.3, np.inf, 0.6, 0.7, 0.5, 0.5, 0.6]
    ev = paired_evidence(a, b)
    assert ev.n == 6 and ev.n_missing == 2


def test_bootstrap_interval_is_seeded_and_covers_the_effect():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.6, 0.1, 20), rng.normal(0.5, 0.1, 20)
    one, two = paired_evidence(a, b, seed=7), paired_evidence(a, b, seed=7)
    assert (one.ci_low, one.ci_high) == (two.ci_low, two.ci_high)
    assert one.ci_low < one.effect < one.ci_high
    assert paired_evidence(a, b, seed=8).ci_low != one.ci_low


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


def test_verdict_words():
    assert verdict(0.1, 0.01, 1) == "supported"
    assert verdict(-0.1, 0.01, 1) == "contradicted"
    assert verdict(0.1, 0.2, 1) == "inconclusive"
    assert verdict(0.1, math.nan, 1) == "inconclusive"
    # lower is better (HD95): a negative a - b is a; claimed better
    assert verdict(-3.0, 0.001, 1, lower_is_better=True) == "supported"
    assert verdict(3.0, 0.001, 1, lower_is_better=True) == "contradicted"
    # a claim of no difference is contradicted by a significant difference, never "supported"
    assert verdict(0.1, 0.001, 0) == "contradicted"
    assert verdict(0.1, 0.5, 0) == "inconclusive"
    with pytest.raises(ValueError):
        verdict(0.1, 0.01, 2)
