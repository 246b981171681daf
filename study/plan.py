"""The trials a space asks for, in order: what a sweep runs and what --dry-run prints.

Nothing here imports Ray, so a space is planned (and rejected) without it.
"""

from __future__ import annotations

import math
from typing import Any

from study.space import Choice, IntRange, LogUniform, Space, Uniform

PAIR_KEY = "pair"
FIXED, SEARCH, CONFIRM = "fixed", "search", "confirm"
# Roles that always run to their last epoch: ASHA and Optuna see drawn trials only.
FULL_LENGTH = (FIXED, CONFIRM)
CONFIRM_SUFFIX = "-s"  # a confirming trial is named <drawn trial>-s<seed>


def pair_label(teacher: str, student: str) -> str:
    return f"{teacher}->{student}"


def search_trial_name(method: str, number: int) -> str:
    """The name of the sweep's `number`-th drawn trial (from 1)."""
    return f"{method}-search-{number:04d}"


def fixed_trials(space: Space) -> list[dict[str, Any]]:
    """Every baseline x pair x seed, in a stable order (names are the trials' identities)."""
    return [
        {"trial_name": f"{method}-{p.teacher}-{p.student}-s{seed}", "role": FIXED,
         "method": method, "teacher": p.teacher, "student": p.student, "seed": seed,
         "params": {}}
        for p in space.pairs for method in space.baselines for seed in space.seeds
    ]


def optuna_space(space: Space) -> dict[str, Any]:
    """Optuna distributions over the `space` keys, plus the pair when there are several."""
    import optuna.distributions as od

    dists: dict[str, Any] = {}
    for key, d in space.space.items():
        if isinstance(d, Choice):
            dists[key] = od.CategoricalDistribution(d.values)
        elif isinstance(d, LogUniform):
            dists[key] = od.FloatDistribution(d.low, d.high, log=True)
        elif isinstance(d, Uniform):
            dists[key] = od.FloatDistribution(d.low, d.high)
        elif isinstance(d, IntRange):
            dists[key] = od.IntDistribution(d.low, d.high)
    if len(space.pairs) > 1:
        dists[PAIR_KEY] = od.CategoricalDistribution(
            [pair_label(p.teacher, p.student) for p in space.pairs])
    return dists


def grid_values(space: Space) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for key, d in space.space.items():
        values[key] = list(d.values) if isinstance(d, Choice) else list(range(d.low, d.high + 1))
    if len(space.pairs) > 1:
        values[PAIR_KEY] = [pair_label(p.teacher, p.student) for p in space.pairs]
    return values


def search_trial_count(space: Space) -> int:
    """Optuna-drawn trials: num_samples, or the grid's size for a grid (each point once)."""
    if not space.space and len(space.pairs) <= 1:
        return 0
    if space.search.sampler == "grid":
        return math.prod(len(v) for v in grid_values(space).values())
    return space.search.num_samples


def confirm_trials(space: Space, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best `confirm_top` completed drawn configurations of each pair, on every seed of
    `seeds` but the one the search ran them on.

    One drawn trial is one seed, and the best of many single draws is optimistic; run again on
    the baselines' seeds, the chosen configuration gets a mean ± std comparable to theirs.
    `rows` are results.csv's rows; ties go to the earlier trial, so a resumed sweep plans the
    same trials.
    """
    top, metric, seeds = space.search.confirm_top, space.search.metric, confirm_seeds(space)
    drawn = [r for r in rows if r["role"] == SEARCH and r["status"] == "completed"
             and isinstance(r[metric], int | float) and math.isfinite(r[metric])]
    sign = -1 if space.search.mode == "max" else 1
    drawn.sort(key=lambda r: (sign * r[metric], r["trial_id"]))
    trials = []
    for p in space.pairs:
        mine = [r for r in drawn if (r["teacher"], r["student"]) == (p.teacher, p.student)]
        for r in mine[:top]:
            params = {k: r[k] for k in space.space}
            trials += [
                {"trial_name": f"{r['trial_id']}{CONFIRM_SUFFIX}{seed}", "role": CONFIRM,
                 "method": r["method"], "teacher": p.teacher, "student": p.student,
                 "seed": seed, "params": params}
                for seed in seeds
            ]
    return trials


def confirm_seeds(space: Space) -> list[int]:
    """The seeds a confirmed configuration runs on: all but the search's own."""
    return [s for s in space.seeds if s != space.search_seed]


def confirmed_trial(confirm_id: str) -> str:
    """The drawn trial a confirming trial repeats (its name without the seed suffix)."""
    return confirm_id.rsplit(CONFIRM_SUFFIX, 1)[0]
