"""Mean ± std over seeds: the one summary every table, the sweep's summary and the benchmarks
print, so that a number means the same wherever it appears."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); a single seed has std 0, not NaN."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean ± std of no values")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), std


def mean_std_text(mean: float, std: float, n: int, pm: str = "±", digits: int = 2) -> str:
    """'72.31 ± 0.40'; just the mean for one seed, where a spread says nothing."""
    return f"{mean:.{digits}f} {pm} {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def summarize(values: Sequence[float], pm: str = "±") -> str:
    return mean_std_text(*mean_std(values), len(values), pm=pm)
