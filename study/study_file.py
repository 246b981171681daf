"""The study file's schema: the YAML a researcher writes (`--space FILE`), validated.

The file is the whole study; its `space:` section is the search space (the distributions
the search draws from, over dotted method keys like `sdkd.lambda`). `study.load` reads and
checks a file into a `StudyFile`; `study.study.Study` adds what is derived from it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from sdkd_core.distributed import split_batch
from sdkd_core.recipe import Recipe
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
    def metric(self) -> str:
        """What the search maximises: `search.metric`, by default the validation accuracy
        when there is a validation split (the test set is then read only to report)."""
        if self.search.metric is not None:
            return self.search.metric
        return "val_acc" if self.dataset.val_split is not None else "test_acc"

    @model_validator(mode="after")
    def _validation_metric_needs_a_split(self):
        metric = self.search.metric or ""
        if metric.startswith("val_") and self.dataset.val_split is None:
            raise ValueError(f"search.metric: {metric} needs validation images; set "
                             "dataset.val_split (e.g. 0.1) or use test_acc")
        return self

    @property
    def search_seed(self) -> int:
        """The seed of the drawn trials and of the sampler (default: the first seed)."""
        return self.seeds[0] if self.search.seed is None else self.search.seed
