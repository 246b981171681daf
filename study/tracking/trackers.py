"""The trackers of a sweep, and what they are given: each trial's row of results.csv and
its rows of epochs.csv (see the package's docstring)."""


from __future__ import annotations

import hashlib
import importlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sdkd_core.errors import UserError
from study.runfolder import IDENTITY
from study.study_object import Study

TRACKERS = {
    "mlflow": "study.tracking.mlflow_tracker",
    "wandb": "study.tracking.wandb_tracker",
}
ENDED = {"completed", "stopped", "diverged", "error"}  # results.csv's final statuses
FAILED = {"diverged", "error"}


@dataclass(frozen=True)
class TrackedTrial:
    """One trial as the trackers log it: results.csv's row and epochs.csv's rows."""

    name: str
    params: dict[str, Any]  # role, method, pair, seed and the sampled parameters
    epochs: list[dict[str, float]] = field(default_factory=list)  # each with its "epoch"
    status: str = "pending"
    result: dict[str, float] = field(default_factory=dict)  # results.csv's numbers, once ended

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class Tracker(Protocol):
    def sync(self, trials: list[TrackedTrial]) -> None:
        """Add what the store lacks: new runs, new epochs, ends."""

    def add_report(self, report_dir: Path) -> None:
        """The study's report, as an artifact of its study-level run."""

    def close(self, interrupted: bool) -> None:
        """End the study's runs (interrupted: those still running are marked killed)."""

    def how_to_open(self) -> str:
        """One line for the sweep's closing lines."""


def numbers(row: dict[str, Any], skip=()) -> dict[str, float]:
    """The row's finite numbers (a metric), its other fields left out."""
    return {k: float(v) for k, v in row.items()
            if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)}


def tracked_trials(results: list[dict], epochs: list[dict],
                   param_keys: list[str]) -> list[TrackedTrial]:
    """results.csv's and epochs.csv's rows (as `write_tables` builds them), by trial."""
    labels = {*IDENTITY, *param_keys}
    by_trial: dict[str, list[dict[str, float]]] = {}
    for row in epochs:
        by_trial.setdefault(row["trial_id"], []).append(numbers(row, labels))
    trials = []
    for row in results:
        params = {k: row[k] for k in (*IDENTITY[1:], *param_keys) if row.get(k, "") != ""}
        ended = row["status"] in ENDED
        result = numbers(row, labels) if ended else {}
        trials.append(TrackedTrial(row["trial_id"], params, by_trial.get(row["trial_id"], []),
                                   row["status"], result))
    return trials


def study_params(study: Study) -> dict[str, str]:
    """The study file, flattened to dotted keys (`recipe.epochs`), for a study-level run."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif value is not None and value != {}:
            flat[prefix] = str(value)

    walk("", study.file.model_dump(mode="json", exclude={"tracking"}))
    return flat


def study_key(study: Study) -> str:
    """What names this run folder in a store shared by many sweeps."""
    return hashlib.sha1(str(study.folder.root).encode()).hexdigest()[:12]


class Trackers:
    """The trackers of one sweep, open in its process."""

    def __init__(self, trackers: dict[str, Tracker], param_keys: list[str]):
        self.trackers = trackers
        self.param_keys = param_keys  # the sampled parameters: params, not metrics
        self.warned: set[str] = set()

    @classmethod
    def open(cls, study: Study) -> Trackers:
        """Open (or, on --resume, find again) each tracker the study file turns on."""
        section = study.file.tracking
        # A tracker's library is imported only when it is on (mlflow takes 1.5 s to import).
        opened = {}
        for name in section.enabled():
            try:
                opened[name] = importlib.import_module(TRACKERS[name]).open_tracker(
                    getattr(section, name), study)
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - whatever the store says, in one line
                raise UserError(f"tracking.{name}: {type(err).__name__}: {first_line(err)}; "
                                f"check tracking.{name} (or --{name}), or leave it out") \
                    from None
        return cls(opened, list(study.file.space))

    def sync(self, results: list[dict], epochs: list[dict]) -> None:
        trials = tracked_trials(results, epochs, self.param_keys)
        self._each("sync", lambda t: t.sync(trials))

    def add_report(self, report_dir: Path) -> None:
        self._each("add_report", lambda t: t.add_report(report_dir))

    def close(self, interrupted: bool) -> None:
        self._each("close", lambda t: t.close(interrupted))

    def lines(self) -> list[str]:
        return [t.how_to_open() for t in self.trackers.values()]

    def _each(self, what: str, call) -> None:
        for name, tracker in self.trackers.items():
            try:
                call(tracker)
            except Exception as err:  # noqa: BLE001 - tracking must not end a sweep
                if name not in self.warned:  # once: the next sync retries anyway
                    self.warned.add(name)
                    print(f"warning: {name} tracking failed in {what} ({type(err).__name__}: "
                          f"{first_line(err)}); the sweep goes on and the next sync catches "
                          "up", file=sys.stderr, flush=True)


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# The sweep's trackers, for its Tune callback: Tune pickles its callbacks into the
# experiment's tuner.pkl and a resumed sweep gets those copies back, so the open trackers
# (database connections, W&B runs) belong to the process, not to the callback.
_ACTIVE = Trackers({}, [])


def activate(trackers: Trackers) -> None:
    global _ACTIVE
    _ACTIVE = trackers


def active() -> Trackers:
    return _ACTIVE
