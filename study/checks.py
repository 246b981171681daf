"""The checks of a study file that the schema alone cannot make: names, values a method
rejects, and each method's own check of every teacher/student pair (SDKD's fusion stage, say).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from sdkd_core.data import DATASETS, DatasetInfo
from sdkd_core.distillers import METHODS, Distiller, get_method, method_config
from sdkd_core.distributed import split_batch
from sdkd_core.errors import UserError, unknown_choice
from sdkd_core.models import MODEL_NAMES, build_model
from sdkd_core.models.published import load_teacher_checkpoint
from sdkd_core.models.registry import is_dense_model
from sdkd_core.recipe import Recipe
from study.plan import method_trial_count
from study.sections import Choice, IntRange, overrides_of
from study.study_file import StudyFile


def check_semantics(path: Path, space: StudyFile, check_files: bool = True) -> None:
    """What the schema alone cannot know: names, ranges a method rejects, fusable stages."""

    def fail(message: str) -> UserError:
        return UserError(f"{path}: {message}")

    if space.dataset.name not in DATASETS:
        raise fail(str(unknown_choice("dataset", space.dataset.name, DATASETS)))
    try:  # a folder's classes (and a file dataset's options) are needed to build any network
        space.dataset.info(listed=False)
    except UserError as err:
        raise fail(f"dataset: {err}") from None
    try:
        space.recipe_obj()
    except UserError as err:
        raise fail(f"recipe: {err}") from None
    try:
        space.teacher.recipe_obj()
    except UserError as err:
        raise fail(f"teacher.recipe: {err}") from None
    task = space.task
    for i, pair in enumerate(space.pairs):
        for role in ("teacher", "student"):
            name = getattr(pair, role)
            if name not in MODEL_NAMES:
                raise fail(f"pairs[{i}].{role}: {unknown_choice('model', name, MODEL_NAMES)}")
            info = space.dataset.info(listed=False)
            if is_dense_model(name) != ("dense" in task.provides) or not _builds(name, info):
                # The same backbone's fitting model first: resnet8 -> deeplabv3_resnet8.
                fits = sorted((m for m in MODEL_NAMES if is_dense_model(m) ==
                               ("dense" in task.provides) and _builds(m, info)),
                              key=lambda m: not m.endswith(f"_{name.rpartition('_')[2]}"))
                raise fail(f"pairs[{i}].{role}: {name} does not fit {space.dataset.name}'s "
                           f"task ({task.label}, {info.num_classes} output channel(s)); use a "
                           f"model such as {', '.join(fits[:4])}")
    for method in space.baselines:
        if method not in METHODS:
            raise fail(f"baselines: {unknown_choice('method', method, METHODS)}")
    where = "search.methods"
    for method in space.tuned_methods:
        if method not in METHODS:
            raise fail(f"{where}: {unknown_choice('method', method, METHODS)}")
    if len(space.tuned_methods) > 1:
        _check_equal_budgets(fail, space)
    for key, items, what in (
        ("seeds", space.seeds, "seed"), ("baselines", space.baselines, "method"),
        ("pairs", [f"{p.teacher}->{p.student}" for p in space.pairs], "teacher/student pair"),
    ):
        if len(set(items)) != len(items):  # a repeat would train the same trials twice
            raise fail(f"{key}: {items} has duplicates; list each {what} once")
    _check_pair_overrides(fail, space)
    for method in space.trained_methods():
        _check_pairs(fail, "baselines" if method in space.baselines else where, space,
                     method, {})
    for key, dist in space.space.items():
        _check_distribution(fail, space, key, dist)
    if check_files:
        _check_checkpoints(fail, space)


def _check_pair_overrides(fail, space: StudyFile) -> None:
    """Each pair's own recipe and settings: valid, and each setting used by some trial."""
    trained = space.trained_methods()
    for i, pair in enumerate(space.pairs):
        where = f"pairs[{i}]"
        amended = overrides_of(pair.recipe)
        if "epochs" in amended:
            raise fail(f"{where}.recipe.epochs: every pair trains recipe.epochs "
                       f"({space.recipe.epochs}), so that ASHA and the tables compare pairs "
                       "epoch by epoch; drop it")
        try:
            Recipe(**{**space.recipe.model_dump(), **amended})
            if "batch_size" in amended:
                split_batch(amended["batch_size"], space.resources.num_workers,
                            f"{where}.recipe.batch_size", "resources.num_workers")
        except UserError as err:
            raise fail(f"{where}.recipe: {err}") from None
        for key in pair.settings:
            method = key.rpartition(".")[0]
            if not method:
                raise fail(f"{where}.settings.{key}: keys are method settings like dkd.{key}")
            if method not in METHODS:
                raise fail(f"{where}.settings.{key}: {unknown_choice('method', method, METHODS)}")
            if method not in trained:
                raise fail(f"{where}.settings.{key}: no trial of this space trains {method}; "
                           f"drop the setting or add {method} to baselines")
            if key in space.space:
                raise fail(f"{where}.settings.{key}: the search draws {key} too (space.{key}); "
                           "keep one of them")
        for method in dict.fromkeys(key.rpartition(".")[0] for key in pair.settings):
            try:
                method_config(method, space.pair_settings(pair.teacher, pair.student, method))
            except UserError as err:
                raise fail(f"{where}.settings: {err}") from None


def _check_checkpoints(fail, space: StudyFile) -> None:
    """Published teachers: a pair's teacher each, and each file fits its architecture."""
    if not space.teacher.checkpoints:
        return
    info = space.dataset.info(listed=False)
    teachers = {p.teacher for p in space.pairs}
    for arch, file in space.teacher.checkpoints.items():
        where = f"teacher.checkpoints.{arch}"
        if arch not in MODEL_NAMES:
            raise fail(f"{where}: {unknown_choice('model', arch, MODEL_NAMES)}")
        if arch not in teachers:
            raise fail(f"{where}: no pair has teacher {arch}; drop it or add the pair")
        if not Path(file).is_file():
            raise fail(f"{where}: {file} is not a file (a relative path is read from the "
                       "space file's folder); give the checkpoint's path")
        try:
            load_teacher_checkpoint(file, arch, info.num_classes, info.in_channels)
        except UserError as err:
            raise fail(f"{where}: {err}") from None


def _check_equal_budgets(fail, space: StudyFile) -> None:
    """Several tuned methods: each has something to draw, and a grid draws as many points for
    each (so every method gets the same number of trials)."""
    for method in space.tuned_methods:
        if not space.keys_of(method) and len(space.pairs) == 1:
            raise fail(f"search.methods: {method} has no space.{method}.* distributions to "
                       f"tune; add some or drop it from search.methods")
    counts = {m: method_trial_count(space, m) for m in space.tuned_methods}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{m} {n}" for m, n in counts.items())
        raise fail(f"search.sampler: grid sizes differ ({shown} points); equal budgets need "
                   "equal grids: give each method as many points, or use tpe or random")


def _check_distribution(fail, space: StudyFile, key: str, dist) -> None:
    method, _, name = key.rpartition(".")
    if not method:
        raise fail(f"space.{key}: keys are method settings like "
                   f"{space.tuned_methods[0]}.{key}")
    if method not in METHODS:
        raise fail(f"space.{key}: {unknown_choice('method', method, METHODS)}")
    if method not in space.tuned_methods:
        tuned = ", ".join(space.tuned_methods)
        raise fail(f"space.{key}: the search tunes {tuned} only; use their keys, or add "
                   f"{method} to search.methods")
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


def _check_pairs(fail, where: str, space: StudyFile, method: str, values: dict[str, Any]) -> None:
    """The method's own check of each teacher/student pair against this config (over the
    pair's own settings)."""
    cls = get_method(method)
    checks_pairs = cls.check_pair.__func__ is not Distiller.check_pair.__func__
    for pair in space.pairs:
        label = f"pair {pair.teacher}->{pair.student}"
        try:
            config = method_config(method, {**space.pair_settings(pair.teacher, pair.student,
                                                                   method), **values})
            cls.check_task(config, space.task)
            if checks_pairs:  # otherwise no network needs building
                cls.check_pair(config, *(_network(name, space.dataset.info(listed=False))
                                         for name in (pair.teacher, pair.student)))
        except UserError as err:
            raise fail(f"{where}: {err} ({label})") from None


def _builds(arch: str, info: DatasetInfo) -> bool:
    """Whether `arch` can be built for the dataset's outputs (depth's one channel, say); on
    the meta device: shapes only, no memory, no time."""
    try:
        with torch.device("meta"):
            build_model(arch, info.num_classes, info.in_channels)
    except UserError:
        return False
    return True


@lru_cache(maxsize=16)
def _network(arch: str, info: DatasetInfo):
    """A pair's network, built once for all the checks of a space (check_pair only reads it)."""
    return build_model(arch, info.num_classes, info.in_channels)
