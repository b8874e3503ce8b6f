"""The drift check's own p-values (lambdas/drift.py, standard library only, so the monitor function's zip
needs no scipy) are scipy's: the same KS statistic and exact p-value bit for bit, and the same chi-square
test with Yates' correction to 1e-9."""
from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from scones.lambdas import drift


def confidences(rng: random.Random, n: int, sharpness: float, digits: int) -> list[float]:
    """Max confidences shaped like the model's (many near 1, ties from rounding as the capture's JSON has)."""
    return [round(min(0.9999, 0.5 + 0.5 * rng.betavariate(sharpness, 1)), digits) for _ in range(n)]


@pytest.mark.parametrize("seed", range(6))
def test_ks_2samp_equals_scipy_exact_for_unequal_and_equal_sizes_with_ties(seed):
    rng = random.Random(seed)
    for capture_size in (5, 20, 37, 200, 451, 1000):
        capture = confidences(rng, capture_size, rng.choice([1, 3, 6]), rng.choice([2, 4, 8]))
        baseline = confidences(rng, 200, 6, 4)
        statistic, p_value = drift.ks_2samp(capture, baseline)
        expected = stats.ks_2samp(capture, baseline, method="exact")
        assert statistic == expected.statistic
        assert p_value == expected.pvalue, (capture_size, p_value, expected.pvalue)


def test_ks_2samp_equals_scipys_default_up_to_its_exact_limit_and_scipy_exact_beyond():
    rng = random.Random(7)
    baseline = confidences(rng, 200, 6, 4)
    at_limit = confidences(rng, 10_000, 5, 4)
    assert drift.ks_2samp(at_limit, baseline)[1] == stats.ks_2samp(at_limit, baseline).pvalue
    beyond = confidences(rng, 12_000, 5, 4)   # scipy's "auto" turns asymptotic here; "exact" stays exact
    assert drift.ks_2samp(beyond, baseline)[1] == stats.ks_2samp(beyond, baseline, method="exact").pvalue


def test_ks_of_a_collapsed_capture_is_tiny_and_of_identical_samples_is_one():
    rng = random.Random(1)
    baseline = confidences(rng, 200, 6, 4)
    assert drift.ks_2samp([0.9999] * 500, baseline)[1] < 1e-100
    assert drift.ks_2samp(baseline, list(baseline)) == (0.0, 1.0)


@pytest.mark.parametrize("classes", [2, 3, 4, 5])
def test_chi2_contingency_equals_scipy_with_yates_correction(classes):
    rng = random.Random(classes)
    for _ in range(50):
        table = [[rng.randint(1, 300) for _ in range(classes)] for _ in range(2)]
        statistic, p_value = drift.chi2_contingency(table)
        expected_statistic, expected_p, _, _ = stats.chi2_contingency(np.array(table), correction=True)
        assert statistic == pytest.approx(expected_statistic, rel=1e-9, abs=1e-12)
        assert p_value == pytest.approx(expected_p, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("dof", range(1, 9))
def test_chi2_survival_function_equals_scipy(dof):
    for statistic in (0.01, 0.5, 1.0, 3.84, 10.0, 40.0, 200.0):
        assert drift.chi2_sf(statistic, dof) == pytest.approx(stats.chi2.sf(statistic, dof), rel=1e-10, abs=1e-300)
