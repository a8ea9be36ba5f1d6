"""Has a quality score dropped? A window's scores against the reference's, pure: a one-sided
two-sample test (H1: the window scores lower), the size of the drop (in score units and as
Cohen's d), and Holm's step-down adjustment when a window tests several scores at once, so that
``alpha`` bounds the chance that any score of a stationary window is called a drop."""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

QUALITY_TESTS = ("welch", "mann-whitney")
TEST_NAMES = {"welch": "Welch t-test (one-sided)", "mann-whitney": "Mann-Whitney U (one-sided)"}


def one_sided_drop(reference: Sequence[float], window: Sequence[float], test: str) -> tuple[float, float]:
    """(statistic, p-value) of H1 "the window scores lower than the reference": Welch's t (unequal
    variances) or the Mann-Whitney U of the window (asymptotic, with the tie correction)."""
    from scipy import stats

    ref, win = np.asarray(reference, dtype=float), np.asarray(window, dtype=float)
    if test not in QUALITY_TESTS:
        raise ValueError(f"unknown quality test {test!r}; known: {', '.join(QUALITY_TESTS)}")
    if np.ptp(ref) == 0 and np.ptp(win) == 0:   # both constant: a drop is certain when the values differ, else none
        drop = float(ref.mean() - win.mean())
        return (-math.inf, 0.0) if drop > 0 else (0.0, 1.0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "welch":
            stat, p = stats.ttest_ind(win, ref, equal_var=False, alternative="less")
        else:
            stat, p = stats.mannwhitneyu(win, ref, alternative="less", method="asymptotic")
    stat, p = float(stat), float(p)
    if math.isnan(p):   # e.g. a sample of one
        stat, p = 0.0, 1.0
    return stat, p


def cohens_d(reference: Sequence[float], window: Sequence[float]) -> float:
    """(mean of reference - mean of window) / pooled standard deviation; positive for a drop."""
    ref, win = np.asarray(reference, dtype=float), np.asarray(window, dtype=float)
    n1, n2 = len(ref), len(win)
    diff = float(ref.mean() - win.mean())
    pooled = ((n1 - 1) * ref.var(ddof=1) + (n2 - 1) * win.var(ddof=1)) / (n1 + n2 - 2) if n1 + n2 > 2 else 0.0
    if pooled <= 0:
        return math.copysign(math.inf, diff) if diff else 0.0
    return diff / math.sqrt(pooled)


def holm_levels(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[bool]]:
    """Holm's step-down procedure: for each p-value, the level it is held to (alpha / (m - rank),
    by ascending p) and whether it is rejected (every smaller p-value was rejected too)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels, rejected = [0.0] * m, [False] * m
    still = True
    for rank, i in enumerate(order):
        levels[i] = alpha / (m - rank)
        still = still and p_values[i] <= levels[i]
        rejected[i] = still
    return levels, rejected
