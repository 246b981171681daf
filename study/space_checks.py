"""The checks of a space file that the schema alone cannot make: names, values a method
rejects, and each method's own check of every teacher/student pair (SDKD's fusion stage, say).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sdkd_core.data import DATASET_INFO, DATASETS
from sdkd_core.distillers import METHODS, Distiller, get_method, method_config
from sdkd_core.errors import UserError, unknown_choice
from sdkd_core.models import MODEL_NAMES, build_model
from study.space import Space
from study.space_sections import Choice, IntRange


def check_semantics(path: Path, space: Space) -> None:
    """What the schema alone cannot know: names, ranges a method rejects, fusable stages."""

    def fail(message: str) -> UserError:
        return UserError(f"{path}: {message}")

    if space.dataset.name not in DATASETS:
        raise fail(str(unknown_choice("dataset", space.dataset.name, DATASETS)))
    try:
        space.recipe_obj()
    except UserError as err:
        raise fail(f"recipe: {err}") from None
    for i, pair in enumerate(space.pairs):
        for role in ("teacher", "student"):
            name = getattr(pair, role)
            if name not in MODEL_NAMES:
                raise fail(f"pairs[{i}].{role}: {unknown_choice('model', name, MODEL_NAMES)}")
    for method in space.baselines:
        if method not in METHODS:
            raise fail(f"baselines: {unknown_choice('method', method, METHODS)}")
    if space.search.method not in METHODS:
        raise fail(f"search.method: {unknown_choice('method', space.search.method, METHODS)}")
    for key, items, what in (
        ("seeds", space.seeds, "seed"), ("baselines", space.baselines, "method"),
        ("pairs", [f"{p.teacher}->{p.student}" for p in space.pairs], "teacher/student pair"),
    ):
        if len(set(items)) != len(items):  # a repeat would train the same trials twice
            raise fail(f"{key}: {items} has duplicates; list each {what} once")
    for method in space.baselines:
        _check_pairs(fail, "baselines", space, method, {})
    for key, dist in space.space.items():
        _check_distribution(fail, space, key, dist)


def _check_distribution(fail, space: Space, key: str, dist) -> None:
    method, _, name = key.rpartition(".")
    if not method:
        raise fail(f"space.{key}: keys are method settings like "
                   f"{space.search.method}.{key}")
    if method not in METHODS:
        raise fail(f"space.{key}: {unknown_choice('method', method, METHODS)}")
    if method != space.search.method:
        raise fail(f"space.{key}: the drawn trials train search.method={space.search.method}; "
                   f"use {space.search.method}.* keys or set search.method: {method}")
    if space.search.sampler == "grid" and not isinstance(dist, Choice | IntRange):
        raise fail(f"space.{key}: a grid needs finite values; use type: choice "
                   f"(or int) instead of {dist.type}")
    # Each end of the range (or every choice) must be a value the method accepts.
    samples = dist.values if isinstance(dist, Choice) else [dist.low, dist.high]
    for value in samples:
        try:
            method_config(method, {key: value})
        except UserError as err:
            raise fail(f"space.{key}: {err}") from None
    for value in samples:  # and fit every pair (SDKD's fusion stage, say)
        _check_pairs(fail, f"space.{key}", space, method, {key: value})


def _check_pairs(fail, where: str, space: Space, method: str, values: dict[str, Any]) -> None:
    """The method's own check of each teacher/student pair against this config."""
    cls = get_method(method)
    if cls.check_pair.__func__ is Distiller.check_pair.__func__:
        return  # the method checks nothing: no network to build
    config = method_config(method, values)
    for pair in space.pairs:
        nets = [_network(name, space.dataset.name) for name in (pair.teacher, pair.student)]
        try:
            cls.check_pair(config, *nets)
        except UserError as err:
            raise fail(f"{where}: {err} (pair {pair.teacher}->{pair.student})") from None


@lru_cache(maxsize=16)
def _network(arch: str, dataset: str):
    """A pair's network, built once for all the checks of a space (check_pair only reads it)."""
    info = DATASET_INFO[dataset]
    return build_model(arch, info.num_classes, info.in_channels)
