"""What each network of a run costs to run, measured once per process on this machine's CPU
(sdkd_core/cost.py): the cost section of the report (analysis/cost.py) and the cost row of
the comparison tables (analysis/tables.py) read the same numbers. A student's cost does not
depend on the method that trained it: one measurement per architecture."""

from __future__ import annotations

from functools import cache

import pandas as pd

from analysis.run import Run
from sdkd_core.cost import Cost, measure
from sdkd_core.models import build_model


@cache
def arch_cost(arch: str, classes: int, shape: tuple[int, int, int]) -> Cost:
    torch_model = build_model(arch, classes, shape[0])
    return measure(torch_model, shape, repeats=10, budget_s=2.0)  # seconds per report, not more


def cost_frame(run: Run) -> pd.DataFrame:
    """One row per architecture of the run's pairs, teachers first."""
    teachers = {t for t, _ in run.pairs()}
    archs = list(dict.fromkeys([t for t, _ in run.pairs()] + [s for _, s in run.pairs()]))
    return pd.DataFrame([{"arch": arch, "role": "teacher" if arch in teachers else "student",
                          **run_cost(run, arch).row()} for arch in archs])


def run_cost(run: Run, arch: str) -> Cost:
    info = run.info
    return arch_cost(arch, info.num_classes, (info.in_channels, *info.view_shape))


def cost_text(row) -> str:
    """A table cell: parameters, MACs per image, CPU latency at batch 1 (a row of the long
    comparison table, or a `Cost`'s `row()`)."""
    return (f"{row['params'] / 1e6:.2f}M params · {row['macs'] / 1e6:.1f}M MACs · "
            f"{row['latency_ms']:.2f} ms")
