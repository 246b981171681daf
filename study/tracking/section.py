"""The study file's `tracking:` section (and the sweep's --mlflow / --wandb flags): where the
sweep's trials are followed besides the run folder.

    tracking:
      mlflow: {}                       # a store inside the run folder (tracking/mlflow.db)
      mlflow: {uri: http://host:5000}  # or a tracking server; experiment: the study's name
      wandb: {mode: offline}           # W&B; project: the study's name; online needs a login

`true` turns a tracker on with its defaults, `false` (or leaving it out) turns it off.
Tracking changes nothing a trial computes, so a resumed sweep may turn it on: the trackers are
filled from the run folder's records, earlier epochs included.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from study.sections import Section

Name = Annotated[str, Field(min_length=1)]


class MlflowSection(Section):
    uri: Name | None = None  # None: sqlite:///<run folder>/tracking/mlflow.db
    experiment: Name | None = None  # None: the study's name


class WandbSection(Section):
    project: Name | None = None  # None: the study's name
    entity: Name | None = None  # None: the login's default entity
    mode: Literal["online", "offline"] | None = None  # None: $WANDB_MODE, else online


class TrackingSection(Section):
    mlflow: MlflowSection | None = None
    wandb: WandbSection | None = None

    @field_validator("mlflow", "wandb", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        """`mlflow: true` is `mlflow: {}`; `false` is no tracker."""
        if isinstance(value, bool):
            return {} if value else None
        return value

    def enabled(self) -> list[str]:
        return [name for name in ("mlflow", "wandb") if getattr(self, name) is not None]

    def with_flags(self, mlflow: str | None, wandb: str | None) -> TrackingSection:
        """The section with the sweep's flags over it: `--mlflow [URI]`, `--wandb [PROJECT]`
        (an empty string: the flag without a value, the tracker's defaults)."""
        update: dict[str, Any] = {}
        if mlflow is not None:
            base = self.mlflow or MlflowSection()
            update["mlflow"] = base.model_copy(update={"uri": mlflow}) if mlflow else base
        if wandb is not None:
            base = self.wandb or WandbSection()
            update["wandb"] = base.model_copy(update={"project": wandb}) if wandb else base
        return self.model_copy(update=update)
