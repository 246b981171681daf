"""Which differences a table can claim: every tuned method's cell against every other student
column of its row, Welch's t-test, Holm's correction over all the comparisons of the table,
and each effect (difference of means) with its 95% confidence interval.

Holm's step-down keeps the family-wise error at 5% however many columns a table has: a
table of eight methods makes dozens of comparisons, and uncorrected some would pass by
chance.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass


@dataclass
class Comparison:
    teacher: str
    student: str
    column: str
    versus: str
    diff: float  # mean of `column` minus mean of `versus`
    ci_low: float  # 95% confidence interval of diff (Welch-Satterthwaite)
    ci_high: float
    p_value: float
    p_holm: float = math.nan  # after Holm's correction over the table

    def row(self) -> dict:
        return asdict(self)


def welch(a: list[float], b: list[float]) -> tuple[float, float, float, float] | None:
    """(difference of means, 95% CI low, high, two-sided p) of Welch's t-test, or None when
    either side has fewer than two seeds."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = sum(a) / len(a) - sum(b) / len(b)
    if _flat(a) and _flat(b):  # no spread (to rounding): the difference is exact
        return diff, diff, diff, 0.0 if abs(diff) > 1e-9 * max(1.0, abs(max(a))) else 1.0
    from scipy import stats  # a second to import: only when a table needs a test

    with warnings.catch_warnings():
        # Seeds a few float roundings apart: scipy warns that its moments lose precision,
        # and the test's answer (no difference to speak of) stands.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
        ci = result.confidence_interval(0.95)
    return diff, float(ci.low), float(ci.high), float(result.pvalue)


def _flat(values: list[float]) -> bool:
    """Equal up to float rounding (identical runs reach the same score by different sums);
    scipy's t-test loses its precision there and says so on stderr."""
    return max(values) - min(values) <= 1e-9 * max(1.0, abs(max(values)))


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the given order: the i-th smallest times (m - i + 1),
    never below the one before it, at most 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare(cells_by_pair: dict[tuple[str, str], dict], tested: set[str]) -> list[Comparison]:
    """Every `tested` column against every other column of its row (pair), Holm-corrected
    over the whole table. `cells_by_pair[(teacher, student)]` maps a column to its seeds'
    values."""
    found, done = [], set()
    for (teacher, student), cells in cells_by_pair.items():
        for column in (c for c in cells if c in tested):
            for versus in (c for c in cells if c != column):
                if frozenset((teacher, student, column, versus)) in done:
                    continue  # two tested columns: one comparison, not two
                done.add(frozenset((teacher, student, column, versus)))
                test = welch(cells[column], cells[versus])
                if test is not None:
                    found.append(Comparison(teacher, student, column, versus, *test))
    for c, p in zip(found, holm([c.p_value for c in found]), strict=True):
        c.p_holm = p
    return found


def stars(p: float | None) -> str:
    if p is None or math.isnan(p):
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else " ns"


def lookup(found: list[Comparison], teacher: str, student: str, a: str, b: str
           ) -> Comparison | None:
    """The comparison of columns a and b in a row, whichever way round it was made."""
    return next((c for c in found if (c.teacher, c.student) == (teacher, student)
                 and {c.column, c.versus} == {a, b}), None)
