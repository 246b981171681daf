"""The run folder: the only thing analysis reads.

    space.yaml   the validated study file, fully resolved (what --resume reads)
    study.json   the study object: that file and everything the sweep derived from it once
                 (subject, tuned methods, search metric and mode, draws, ASHA's first rung)
    results.csv  one row per trial (identity, sampled parameters, accuracy, status)
    epochs.csv   one row per trial per epoch
    optuna.db    the Optuna study (sqlite)
    teachers/    each pretrained teacher's weights (<arch>.pt) and card (<arch>.json)
    tune/        Ray Tune's experiment folder (trial checkpoints, logs)
    confirm/     the second experiment: the best drawn configurations on the other seeds
    history/     <trial>.json: every finished epoch's metrics, written by the trial before it
                 reports the epoch to Tune
    ended/       <trial>.json for each trial that has ended (completed, stopped by ASHA,
                 diverged), written before anything else learns of the end: a resumed sweep
                 never runs such a trial again
    report/      written by the analysis

results.csv and epochs.csv are rebuilt from the trials' own records: each trial's config
(params.json in tune/ or confirm/), its history (history/, the engine's record of every
finished epoch, one row each) and its end (ended/). Tune's own files are its working state, not
the record: Tune may start a logged file afresh when it restarts a trial that has no Tune
checkpoint (a Ray Train trial). Nothing is lost or counted twice however often the sweep is
killed and resumed.

This package is the contract between the sweep and the analysis: the folder's layout (here), a
trial's record and name (`trials`), and how the tables are rebuilt (`tables`). The analysis
reads nothing else of `study`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sdkd_core.errors import UserError
from sdkd_core.files import atomic_write, write_json, write_text

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
    def study_json(self) -> Path:
        return self.root / "study.json"

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

    @property
    def ended_dir(self) -> Path:
        return self.root / "ended"

    def history_file(self, trial_name: str) -> Path:
        """A trial's record of every finished epoch (written by the trial's rank 0)."""
        return self.root / "history" / f"{trial_name}.json"

    def history(self, trial_name: str) -> list[dict[str, Any]]:
        """The trial's finished epochs, in order ([] before its first)."""
        try:
            return json.loads(self.history_file(trial_name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def record_end(self, trial_name: str, how: str, result: dict[str, Any]) -> None:
        """Record that a trial ended (`completed`, `stopped` or `diverged`) with its last
        result; the first record stands (a stopped trial's process may still finish an
        epoch)."""
        path = self.ended_dir / f"{trial_name}.json"
        if not path.exists():
            metrics = {k: v for k, v in result.items() if k not in TUNE_KEYS}
            write_json(path, {"how": how, **metrics})

    def end_of(self, trial_name: str) -> dict[str, Any] | None:
        """How the trial ended (its record), or None while it has not."""
        path = self.ended_dir / f"{trial_name}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def ends(self) -> dict[str, dict[str, Any]]:
        """Every ended trial's record, by name."""
        return {p.stem: end for p in sorted(self.ended_dir.glob("*.json"))
                if (end := self.end_of(p.stem)) is not None}

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

    def write_study(self, record: dict[str, Any]) -> None:
        """The study object, so the analysis reads what the sweep derived instead of deriving
        it again."""
        write_json(self.study_json, record)

    def read_study(self) -> dict[str, Any]:
        """The study record (study.json); a UserError line when it is missing or damaged."""
        try:
            return json.loads(self.study_json.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.root} is not a run folder (no study.json); pass the folder "
                            "study/sweep.py wrote, e.g. runs/ablations") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{self.study_json}: damaged ({err}); rebuild it with "
                            f"python study/sweep.py --output {self.root} --resume") from None


def is_diverged(result: dict[str, Any] | None) -> bool:
    """A trial's last result says its loss became NaN or infinite (see study.trial)."""
    return bool(result and result.get("diverged"))

