"""The trials a space asks for, in order: what a sweep runs and what --dry-run prints.

Nothing here imports Ray, so a study is planned (and rejected) without it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import optuna.distributions as od

from sdkd_core.claims import SettingBeats
from sdkd_core.distillers import get_method, method_config
from study.runfolder.trials import DRAWN, PlannedTrial, pair_label
from study.sections import Choice, IntRange, LogUniform, Uniform
from study.study_file import StudyFile

PAIR_KEY = "pair"


def on_its_pair(space: StudyFile, trial: PlannedTrial) -> PlannedTrial:
    """`trial` under its pair's own protocol: the pair's recipe fields and its settings of the
    trial's method (drawn values, which never repeat a pair's setting, come last)."""
    settings = space.pair_settings(trial.teacher, trial.student, trial.method)
    return dataclasses.replace(trial, params={**settings, **trial.params},
                               recipe=space.pair_recipe(trial.teacher, trial.student))


def baseline_trials(space: StudyFile) -> list[PlannedTrial]:
    """Every baseline x pair x seed, in a stable order (names are the trials' identities)."""
    return [on_its_pair(space, PlannedTrial(method, p.teacher, p.student, seed))
            for p in space.pairs for method in space.baselines for seed in space.seeds]


def plan(space: StudyFile, max_trials: int | None) -> tuple[list[PlannedTrial], int]:
    """(baseline trials, number of drawn trials), capped at max_trials in that order."""
    baselines, n_drawn = baseline_trials(space), drawn_trial_count(space)
    if max_trials is not None:
        baselines = baselines[:max_trials]
        n_drawn = max(0, min(n_drawn, max_trials - len(baselines)))
    return baselines, n_drawn


def optuna_space(space: StudyFile, method: str) -> dict[str, Any]:
    """Optuna distributions over `method`'s `space` keys, plus the pair when there are
    several."""
    dists: dict[str, Any] = {}
    for key in space.keys_of(method):
        d = space.space[key]
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


def grid_values(space: StudyFile, method: str) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for key in space.keys_of(method):
        d = space.space[key]
        values[key] = list(d.values) if isinstance(d, Choice) else list(range(d.low, d.high + 1))
    if len(space.pairs) > 1:
        values[PAIR_KEY] = [pair_label(p.teacher, p.student) for p in space.pairs]
    return values


def method_trial_count(space: StudyFile, method: str) -> int:
    """One tuned method's drawn trials: num_samples, or its grid's size (each point once)."""
    if not space.keys_of(method) and len(space.pairs) <= 1:
        return 0
    if space.search.sampler == "grid":
        return math.prod(len(v) for v in grid_values(space, method).values())
    return space.search.num_samples


def drawn_trial_count(space: StudyFile) -> int:
    """Optuna-drawn trials, of every tuned method."""
    return sum(method_trial_count(space, m) for m in space.tuned_methods)


def draws_per_method(space: StudyFile, n_drawn: int) -> dict[str, int]:
    """`n_drawn` drawn trials shared among the tuned methods in turn (each capped at its own
    count): equal budgets, also under --max-trials."""
    budget = dict.fromkeys(space.tuned_methods, 0)
    caps = {m: method_trial_count(space, m) for m in budget}
    while n_drawn > 0 and any(budget[m] < caps[m] for m in budget):
        for m in budget:
            if n_drawn > 0 and budget[m] < caps[m]:
                budget[m] += 1
                n_drawn -= 1
    return budget


def confirm_trials(space: StudyFile, rows: list[dict[str, Any]]) -> list[PlannedTrial]:
    """The best `confirm_top` completed drawn configurations of each pair and tuned method,
    on every seed of `seeds` but the one the search ran them on.

    One drawn trial is one seed, and the best of many single draws is optimistic; run again on
    the baselines' seeds, the chosen configuration gets a mean ± std comparable to theirs.
    Where a claim of the method compares values of a key the space draws (`SettingBeats`,
    e.g. SDKD's sdkd.proxy_arch), the best configuration of each of those values is confirmed
    too, so that the report can test the claim on every seed.
    `rows` are results.csv's rows; ties go to the earlier trial, so a resumed sweep plans the
    same trials.
    """
    top, metric, seeds = space.search.confirm_top, space.metric, confirm_seeds(space)
    drawn = [r for r in rows if r["role"] == DRAWN and r["status"] == "completed"
             and isinstance(r[metric], int | float) and math.isfinite(r[metric])]
    sign = -1 if space.mode == "max" else 1
    drawn.sort(key=lambda r: (sign * r[metric], r["trial_id"]))
    trials = []
    for p in space.pairs:
        for method in space.tuned_methods:
            mine = [r for r in drawn if (r["teacher"], r["student"], r["method"]) ==
                    (p.teacher, p.student, method)]
            chosen = mine[:top]
            for key, value in compared_values(space, method) if top else ():
                best = next((r for r in mine if str(r.get(key)) == str(value)), None)
                if best is not None and best not in chosen:
                    chosen.append(best)
            for r in chosen:
                drawn_trial = on_its_pair(space, PlannedTrial(
                    method, p.teacher, p.student, r["seed"],
                    {k: r[k] for k in space.keys_of(method)}, DRAWN, r["trial_id"]))
                trials += [drawn_trial.confirming(seed) for seed in seeds]
    return trials


def compared_values(space: StudyFile, method: str) -> list[tuple[str, Any]]:
    """(key, value) for each value a `SettingBeats` claim of `method` compares, where the
    space draws that key."""
    drawn = set(space.keys_of(method))
    return [(c.key, v) for c in get_method(method).claims
            if isinstance(c, SettingBeats) and c.key in drawn for v in (c.better, c.worse)]


def confirm_seeds(space: StudyFile) -> list[int]:
    """The seeds a confirmed configuration runs on: all but the search's own."""
    return [s for s in space.seeds if s != space.search_seed]


def asha_grace_period(space: StudyFile) -> tuple[int, str | None]:
    """ASHA's first rung, in epochs, and why it differs from `search.grace_period` if it does.

    A rung must not rank students that are still the same network: the first rung lies after
    the latest epoch from which some configuration the space can draw starts to change its
    student (`Distiller.first_epoch_configured`: SDKD's phase boundary). Each distribution
    is tried at its ends (or every choice), on every pair's settings. The rung is one for
    every tuned method, so that each gets the same epochs before ASHA.
    """
    epochs, asked = space.recipe.epochs, space.search.grace_period
    latest, label = max((latest_unconfigured_epoch(space, m), get_method(m).label)
                        for m in space.tuned_methods)
    grace = min(asha_first := max(asked, latest + 1), epochs)
    if asha_first == asked:
        return grace, None
    return grace, (f"ASHA's first rung moved from epoch {asked} (search.grace_period) to "
                   f"{grace}: {label} students of some configurations the space draws are "
                   f"the same network until epoch {latest}, and a rung would rank them by chance")


def latest_unconfigured_epoch(space: StudyFile, method: str) -> int:
    """The latest epoch from which a configuration of `method` the space can draw changes
    its student."""
    keys = space.keys_of(method)
    samples = [d.values if isinstance(d, Choice) else [d.low, d.high]
               for d in (space.space[k] for k in keys)]
    return max(get_method(method).first_epoch_configured(method_config(method, {
        **space.pair_settings(p.teacher, p.student, method),
        **dict(zip(keys, combo, strict=True))}), space.recipe.epochs)
        for p in space.pairs for combo in itertools.product(*samples))
