"""The run folder: the only thing analysis reads.

    space.yaml   the validated, fully resolved space
    protocol.json  what the sweep derived from it: the metric the search saw, ASHA's first rung
    results.csv  one row per trial (identity, sampled parameters, accuracy, status)
    epochs.csv   one row per trial per epoch
    optuna.db    the Optuna study (sqlite)
    teachers/    each pretrained teacher's weights (<arch>.pt) and card (<arch>.json)
    tune/        Ray Tune's experiment folder (trial checkpoints, logs)
    confirm/     the second experiment: the best drawn configurations on the other seeds
    report/      written by the analysis

results.csv and epochs.csv are rebuilt from the trials' own records in tune/ and confirm/
(each trial's params.json and result.json, which Tune flushes on every report). A trial that
restarts from its checkpoint reports some epochs again; rows are keyed by (trial, epoch), so
nothing is lost or counted twice however often the sweep is killed and resumed.

This package is the contract between the sweep and the analysis: the folder's layout (here), a
trial's record and name (`trials`), and how the tables are rebuilt (`tables`). The analysis
reads nothing else of `study`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sdkd_core.errors import UserError
from sdkd_core.files import atomic_write, write_json, write_text

# Beside a Ray Train run's checkpoints (tune/ray_train/<trial>/): every finished epoch's metrics.
TRAIN_HISTORY_FILE = "epochs.json"
IDENTITY = ("trial_id", "role", "method", "teacher", "student", "seed")
# What Tune adds to every reported result: bookkeeping, not measurements.
TUNE_KEYS = {
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "config",
    "time_since_restore", "iterations_since_restore", "experiment_tag", "should_checkpoint",
    "checkpoint_path", "episodes_total", "timesteps_total", "timesteps_since_restore",
}


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def space_yaml(self) -> Path:
        return self.root / "space.yaml"

    @property
    def protocol_json(self) -> Path:
        return self.root / "protocol.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def epochs_csv(self) -> Path:
        return self.root / "epochs.csv"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.optuna_db.resolve()}"

    @property
    def tune_dir(self) -> Path:
        return self.root / "tune"

    @property
    def confirm_dir(self) -> Path:
        return self.root / "confirm"

    def trial_dir(self, trial_id: str) -> Path:
        """A trial's Tune folder: tune/<trial>, or confirm/<trial> for a confirming trial."""
        confirm = self.confirm_dir / trial_id
        return confirm if confirm.is_dir() else self.tune_dir / trial_id

    @property
    def train_dir(self) -> Path:
        return self.root / "tune" / "ray_train"

    @property
    def teachers_dir(self) -> Path:
        return self.root / "teachers"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def check_writable(self) -> None:
        """Fail now, not after hours of training, when the run folder cannot be written.

        Probes by writing a file; what the probe created is removed, so a failure leaves
        nothing behind.
        """
        created = [p for p in (self.root, *self.root.parents) if not p.exists()]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise UserError(f"{self.root}: the run folder cannot be written "
                            f"({err.strerror or err}); pass --output with a writable "
                            "folder") from None
        finally:
            for path in created:  # innermost first
                with contextlib.suppress(OSError):
                    path.rmdir()

    def keep_teacher(self, arch: str, weights: Path, card: dict[str, Any]) -> None:
        """Copy a cached teacher in, so the run folder alone explains its trials."""
        target = self.teachers_dir / f"{arch}.pt"
        atomic_write(target, lambda tmp: shutil.copyfile(weights, tmp))
        write_json(target.with_suffix(".json"), card)

    def write_space(self, document: dict[str, Any]) -> None:
        write_text(self.space_yaml, yaml.safe_dump(document, sort_keys=False))

    def write_protocol(self, facts: dict[str, Any]) -> None:
        """What the sweep derived from the space (the search's metric, the epoch of ASHA's
        first rung), so the report states the protocol as it ran."""
        write_json(self.protocol_json, facts)


def is_diverged(result: dict[str, Any] | None) -> bool:
    """A trial's last result says its loss became NaN or infinite (see study.trial)."""
    return bool(result and result.get("diverged"))


def subject_method(space: dict[str, Any]) -> str:
    """The method a run studies: the one its drawn trials train (space.yaml's
    `search.method`, or the schema's default where a hand-written space leaves it out)."""
    search = space.get("search") or {}
    if "method" not in search:
        from study.space_sections import SearchSection

        return str(SearchSection.model_fields["method"].default)
    return str(search["method"])
