"""The study file's schema: the YAML a researcher writes (`--space FILE`), validated.

The file is the whole study; its `space:` section is the search space (the distributions
the search draws from, over dotted method keys like `sdkd.lambda`). `study.load` reads and
checks a file into a `StudyFile`; `study.study.Study` adds what is derived from it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from sdkd_core.datasets import DATASET_INFO
from sdkd_core.distributed import split_batch
from sdkd_core.recipe import Recipe
from sdkd_core.tasks import Task, get_task
from study.sections import (
    DatasetSection,
    Distribution,
    ModuleName,
    Pair,
    RecipeSection,
    Resources,
    SearchSection,
    Section,
    Seed,
    TeacherSection,
    overrides_of,
)
from study.tracking.section import TrackingSection


class StudyFile(Section):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    dataset: DatasetSection = DatasetSection()
    recipe: RecipeSection = RecipeSection()
    teacher: TeacherSection = TeacherSection()
    pairs: Annotated[list[Pair], Field(min_length=1)]
    baselines: list[str] = []
    # The researcher's own modules that register methods (imported before anything is checked).
    plugins: list[ModuleName] = []
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0]
    search: SearchSection = SearchSection()
    space: dict[str, Distribution] = {}
    resources: Resources = Resources()
    tracking: TrackingSection = TrackingSection()  # MLflow, W&B (study/tracking/)

    @model_validator(mode="after")
    def _batch_splits_among_workers(self):
        if self.recipe.batch_size >= 2:  # smaller ones are the recipe's own error
            split_batch(self.recipe.batch_size, self.resources.num_workers,
                        "recipe.batch_size", "resources.num_workers")
        return self

    def recipe_obj(self) -> Recipe:
        return Recipe(**self.recipe.model_dump())

    @property
    def tuned_methods(self) -> list[str]:
        """The methods the search tunes, in order; the first is the run's subject."""
        return list(self.search.methods)

    def keys_of(self, method: str) -> list[str]:
        """The `space` keys of `method`."""
        return [k for k in self.space if k.rpartition(".")[0] == method]

    def trained_methods(self) -> list[str]:
        """The methods some trial trains: the baselines, and the tuned methods when the
        space draws anything (a setting, or among several pairs)."""
        drawn = self.tuned_methods if self.space or len(self.pairs) > 1 else []
        return list(dict.fromkeys([*self.baselines, *drawn]))

    def pair_section(self, teacher: str, student: str) -> Pair:
        return next(p for p in self.pairs if (p.teacher, p.student) == (teacher, student))

    def pair_recipe(self, teacher: str, student: str) -> dict[str, Any]:
        """The recipe fields a pair changes (its `recipe:`), over the space's `recipe`."""
        return overrides_of(self.pair_section(teacher, student).recipe)

    def pair_settings(self, teacher: str, student: str, method: str) -> dict[str, Any]:
        """The pair's own settings of `method` (its `settings:` keys `<method>.*`)."""
        settings = self.pair_section(teacher, student).settings
        return {k: v for k, v in settings.items() if k.rpartition(".")[0] == method}

    @property
    def task(self) -> Task:
        """The task the dataset poses (classification, segmentation, depth)."""
        return get_task(DATASET_INFO[self.dataset.name].task)

    @property
    def metric(self) -> str:
        """What the search optimises: `search.metric`, by default the task's metric on the
        validation images when there is a validation split (the test set is then read only to
        report): `val_acc`, `val_miou`, `val_rmse`."""
        if self.search.metric is not None:
            return self.search.metric
        split = "val" if self.dataset.val_split is not None else "test"
        return f"{split}_{self.task.metric}"

    @property
    def mode(self) -> str:
        """Which way the search's metric is better: `search.mode`, by default the task's."""
        return self.search.mode or self.task.mode

    @model_validator(mode="after")
    def _metric_of_the_task(self):
        metric = self.search.metric
        if metric is None or self.dataset.name not in DATASET_INFO:
            return self  # an unknown dataset is reported on its own
        task = self.task
        known = [f"{split}_{name}{best}" for split in ("val", "test")
                 for name in task.metric_labels for best in ("", "_best")]
        if metric not in known:
            raise ValueError(f"search.metric: {metric} is not a metric of {task.label}; use "
                             f"one of {', '.join(known)}")
        if metric.startswith("val_") and self.dataset.val_split is None:
            raise ValueError(f"search.metric: {metric} needs validation images; set "
                             f"dataset.val_split (e.g. 0.1) or use test_{task.metric}")
        return self

    @property
    def search_seed(self) -> int:
        """The seed of the drawn trials and of the sampler (default: the first seed)."""
        return self.seeds[0] if self.search.seed is None else self.search.seed
