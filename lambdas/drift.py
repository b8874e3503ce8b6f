"""The drift check, in the Python standard library alone: one implementation for `scones monitor` and the
scheduled monitor function (lambdas/drift_monitor.py), whose zip holds no numpy or scipy.

Two tests compare the captured answers with the baseline training writes from the test set:
- class balance: chi-square test of the 2 x k table of predicted-class counts (baseline row, capture row),
  with Yates' continuity correction when the table has one degree of freedom, as
  scipy.stats.chi2_contingency(table, correction=True) computes it;
- confidence: two-sample Kolmogorov-Smirnov test of the maximum confidence, two-sided, with the exact
  p-value scipy.stats.ks_2samp(method="exact") computes (Hodges' lattice-path recursion in the
  numerically stable form of Viehmann, arXiv:2102.08037). scipy's default method="auto" is the same
  up to 10,000 records a side and switches to an asymptotic formula above; the exact one stays linear in
  the capture size (the baseline is the short side), so it is kept for every size.
tests/test_drift_statistics.py holds both equal to scipy's.
"""
from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter
from typing import Any, Iterable, Protocol, Sequence

DEFAULT_ALPHA = 0.01          # a p-value below this fails the test
MIN_RECORDS_FOR_DRIFT = 20    # fewer answers than this say nothing about a distribution
BASELINE_KEYS = ("classes", "predicted_class_counts", "max_confidence")   # what training's baseline.json holds


class Answer(Protocol):
    """What the drift check reads of a captured answer (lambdas.capture_records.CaptureRecord has it)."""

    predicted_index: int
    max_confidence: float


# --- chi-square -----------------------------------------------------------------------------

def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square with `dof` degrees of freedom (closed forms of Q(dof/2, x/2))."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {dof}")
    if statistic <= 0:
        return 1.0
    half = statistic / 2.0
    if dof % 2 == 0:
        # Q(n, x) = e^-x * sum_{i<n} x^i / i!
        term, total = 1.0, 1.0
        for i in range(1, dof // 2):
            term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    # Q(n + 1/2, x) = erfc(sqrt x) + e^-x * sum_{i=1..n} x^(i-1/2) / Gamma(i + 1/2)
    root = math.sqrt(half)
    total, term = math.erfc(root), root / math.gamma(1.5)
    for i in range(1, dof // 2 + 1):
        total += math.exp(-half) * term
        term *= half / (i + 0.5)
    return min(1.0, total)


def chi2_contingency(table: Sequence[Sequence[int]]) -> tuple[float, float]:
    """(statistic, p-value) of the chi-square test of independence of a table with no empty row or column."""
    rows = [sum(row) for row in table]
    columns = [sum(column) for column in zip(*table)]
    total = sum(rows)
    dof = (len(rows) - 1) * (len(columns) - 1)
    if dof == 0:
        return 0.0, 1.0
    statistic = 0.0
    for row_total, row in zip(rows, table):
        for column_total, observed in zip(columns, row):
            expected = row_total * column_total / total
            if dof == 1:  # Yates: move each count towards its expectation by at most 0.5
                difference = expected - observed
                corrected = observed + math.copysign(min(0.5, abs(difference)), difference) if difference else observed
            else:
                corrected = observed
            statistic += (corrected - expected) ** 2 / expected
    return statistic, chi2_sf(statistic, dof)


# --- Kolmogorov-Smirnov -------------------------------------------------------------------

def ks_statistic(first: Sequence[float], second: Sequence[float]) -> float:
    """The largest distance between the two empirical distribution functions."""
    a, b = sorted(first), sorted(second)
    n, m = len(a), len(b)
    distance = 0.0
    for value in a + b:
        distance = max(distance, abs(bisect.bisect_right(a, value) / n - bisect.bisect_right(b, value) / m))
    return distance


def _outside_square(n: int, h: int) -> float:
    """Share of lattice paths of an n x n square that leave the band |x - y| < h (equal sample sizes)."""
    probability = 0.0
    k = n // h
    while k >= 0:
        term = 1.0
        for j in range(h):
            term = (n - k * h - j) * term / (n + k * h + j + 1)
        probability = term * (1.0 - probability)
        k -= 1
    return 2 * probability


def _outside_band(m: int, n: int, g: int, h: int) -> float:
    """Share of lattice paths (0,0)->(m,n) that leave the band |x/m - y/n| < h/lcm(m,n): the p-value."""
    if m < n:
        m, n = n, m
    mg, ng = m // g, n // g
    low, high = 0, min(math.ceil(h / mg), n + 1)
    width = high - low
    column = [1.0] * min(2 * high + 2, n + 1)
    for j in range(low, high):
        column[j] = 0.0
    for i in range(1, m + 1):
        last_low, last_width = low, width
        low = min(max(math.floor((ng * i - h) / mg) + 1, 0), n)
        high = min(math.ceil((ng * i + h) / mg), n + 1)
        if high <= low:
            return 1.0
        value = 0.0 if low == 0 else 1.0
        for offset in range(high - low):
            j = offset + low
            value = (column[offset + low - last_low] * i + value * j) / (i + j)
            column[offset] = value
        width = high - low
        if last_width > width:
            for index in range(width, last_width):
                column[index] = 1.0
    return column[high - low - 1]


def ks_2samp(first: Sequence[float], second: Sequence[float]) -> tuple[float, float]:
    """(statistic, exact two-sided p-value) of the two-sample Kolmogorov-Smirnov test."""
    n1, n2 = len(first), len(second)
    if not n1 or not n2:
        raise ValueError("the Kolmogorov-Smirnov test needs two non-empty samples")
    distance = ks_statistic(first, second)
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    h = round(distance * lcm)   # the distance as a whole number of lattice steps
    distance = h / lcm
    if h == 0:
        return distance, 1.0
    probability = _outside_square(n1, h) if n1 == n2 else _outside_band(n1, n2, g, h)
    return distance, min(1.0, max(0.0, probability))


# --- the check ----------------------------------------------------------------------------

def checked_baseline(document: Any, where: str) -> dict[str, Any]:
    """The baseline document, or a ValueError naming what it lacks and where it came from."""
    if not isinstance(document, dict):
        raise ValueError(f"baseline {where} is a JSON {type(document).__name__}, not an object")
    missing = [key for key in BASELINE_KEYS if key not in document]
    if missing:
        raise ValueError(f"baseline {where} lacks {', '.join(missing)}")
    return document


def class_counts(records: Iterable[Answer], classes: Iterable[str]) -> dict[str, int]:
    names = list(classes)
    counts = Counter(record.predicted_index for record in records)
    return {name: int(counts.get(index, 0)) for index, name in enumerate(names)}


def check_drift(records: Sequence[Answer], baseline: dict[str, Any] | None,
                alpha: float = DEFAULT_ALPHA, min_records: int = MIN_RECORDS_FOR_DRIFT) -> dict[str, Any]:
    """Class balance and confidence distribution of `records` against the training baseline.

    status is "pass", "fail", or "skipped" (no baseline, or too few records to test).
    """
    if baseline is None:
        return {"status": "skipped", "reason": "no baseline.json given or found", "alpha": alpha, "tests": {}}
    if len(records) < min_records:
        return {"status": "skipped", "alpha": alpha, "tests": {}, "min_records": min_records,
                "reason": f"only {len(records)} captured records; the check needs at least {min_records}"}
    classes = list(baseline["classes"])
    observed = class_counts(records, classes)
    expected = {name: int(baseline["predicted_class_counts"].get(name, 0)) for name in classes}
    # a class nobody predicted in either set adds no information
    kept = [name for name in classes if expected[name] + observed[name] > 0]
    if len(kept) < 2:
        balance_statistic, balance_p = 0.0, 1.0
    else:
        balance_statistic, balance_p = chi2_contingency([[expected[n] for n in kept], [observed[n] for n in kept]])
    balance = {
        "test": "chi-square test of predicted class counts, capture vs baseline (2 x k contingency table)",
        "statistic": float(balance_statistic),
        "p_value": float(balance_p),
        "baseline_share": {n: expected[n] / max(1, sum(expected.values())) for n in classes},
        "capture_share": {n: observed[n] / max(1, len(records)) for n in classes},
        "passed": bool(balance_p >= alpha),
    }
    captured = [float(record.max_confidence) for record in records]
    reference = [float(value) for value in baseline["max_confidence"]]
    ks_distance, ks_p = ks_2samp(captured, reference)
    confidence = {
        "test": "two-sample Kolmogorov-Smirnov test of max confidence, capture vs baseline",
        "statistic": float(ks_distance),
        "p_value": float(ks_p),
        "baseline_median": float(statistics.median(reference)),
        "capture_median": float(statistics.median(captured)),
        "passed": bool(ks_p >= alpha),
    }
    passed = balance["passed"] and confidence["passed"]
    return {
        "status": "pass" if passed else "fail",
        "alpha": alpha,
        "rule": f"each test fails when its p-value < {alpha}",
        "n_capture": len(records),
        "n_baseline": int(baseline.get("n", len(reference))),
        "tests": {"class_balance": balance, "confidence_distribution": confidence},
    }
