"""A finished (or running) sweep, read from its run folder and nothing else.

Every analysis step starts here: `load_run(path)` checks that the folder is a run folder, that
results.csv has the columns the tables need and that at least one trial has finished, and says
in one line what is wrong when not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from sdkd_core.datasets import DATASET_INFO, DatasetInfo
from sdkd_core.errors import UserError
from sdkd_core.files import file_sha256
from sdkd_core.plugins import load_plugins
from sdkd_core.tasks import Task, get_task
from study.runfolder import IDENTITY, RunFolder
from study.runfolder.trials import PlannedTrial

# "stopped" trials were cut short by ASHA at a rung: finished, but with fewer epochs.
FINISHED = ("completed", "stopped")


class Skipped(Exception):
    """A figure the run has no data for; the message says why (shown in the report)."""


def metric_key(column: str) -> str:
    """The task's metric a results column reports: `test_miou_best` -> `miou`."""
    return column.removeprefix("test_").removeprefix("val_").removesuffix("_best")


def required_columns(task: Task) -> tuple[str, ...]:
    return (*IDENTITY, f"test_{task.metric}", f"test_{task.metric}_best", "epochs", "status")


@dataclass
class Run:
    folder: RunFolder
    record: dict[str, Any]  # study.json: the study file and what the sweep derived from it
    results: pd.DataFrame
    epochs: pd.DataFrame

    @property
    def space(self) -> dict[str, Any]:
        """The study file, as the sweep resolved it."""
        return self.record["space"]

    @property
    def root(self) -> Path:
        return self.folder.root

    @property
    def name(self) -> str:
        return str(self.space.get("name", self.root.name))

    @property
    def dataset(self) -> str:
        return str(self.space["dataset"]["name"])

    @property
    def info(self) -> DatasetInfo:
        """The dataset as the sweep saw it (a folder's classes, a file dataset's size), from
        study.json; the table's for runs recorded before it kept one."""
        recorded = self.record.get("dataset_info")
        if recorded is None:
            return DATASET_INFO[self.dataset]
        return DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in recorded.items()})

    @property
    def class_names(self) -> list[str] | None:
        """A file dataset's class names (its folders), None for the other datasets."""
        return self.record.get("classes")

    @property
    def task(self) -> Task:
        """What the run's networks predict (classification for runs recorded before tasks)."""
        return get_task(self.info.task)

    @property
    def score(self) -> str:
        """The results column of the task's metric on the test set, last epoch: `test_acc`,
        `test_miou`, `test_rmse`."""
        return f"test_{self.task.metric}"

    def table_metrics(self) -> dict[str, tuple[str, str]]:
        """{results column: (table name, what it reports)}: the task's metric at the last and
        at the best epoch, then each of its other metrics (top-5, pixel accuracy, AbsRel, ...)
        at the last epoch where the trials measured it (older runs lack some columns)."""
        task, done = self.task, self.completed
        tables = {self.score: ("last", "last epoch"), f"{self.score}_best": ("best", "best epoch")}
        for key, label in task.metric_labels.items():
            column = f"test_{key}"
            if key != task.metric and column in done.columns and done[column].notna().any():
                tables[column] = (key, f"{label.split(' (')[0]}, last epoch")
        return tables

    @property
    def n_epochs(self) -> int:
        return int(self.space["recipe"]["epochs"])

    @property
    def method(self) -> str:
        """The run's subject: the first tuned method (`search.methods`)."""
        return str(self.record["subject"])

    @property
    def label(self) -> str:
        return method_label(self.method)

    @property
    def tuned_methods(self) -> list[str]:
        """The methods the search tuned (`search.methods`), the subject first."""
        return list(self.record["tuned_methods"])

    @property
    def baselines(self) -> list[str]:
        """The baseline methods as the study file lists them (`baselines:`), in that order."""
        return list(self.record["baselines"])

    @property
    def metric(self) -> str:
        """What the search optimised (the validation accuracy where there is a split)."""
        return str(self.record["metric"])

    @property
    def first_rung(self) -> int | None:
        """The epoch of ASHA's first rung as the sweep ran it (None: no ASHA)."""
        return self.record["asha_first_rung"]

    @property
    def search_space(self) -> dict[str, dict[str, Any]]:
        """The swept keys and their distributions, as the space file gave them."""
        return dict(self.space.get("space") or {})

    @property
    def completed(self) -> pd.DataFrame:
        """Trials that ran every epoch: the only ones whose accuracies compare."""
        return self.results[self.results["status"] == "completed"]

    def pairs(self) -> list[tuple[str, str]]:
        rows = self.results[["teacher", "student"]].drop_duplicates()
        return [(t, s) for t, s in rows.itertuples(index=False)]

    @cached_property
    def teacher_cards(self) -> dict[str, dict[str, Any]]:
        """Each pretrained teacher's card (accuracy, recipe, weights hash) by architecture."""
        cards = {}
        for path in sorted(self.folder.teachers_dir.glob("*.json")):
            cards[path.stem] = json.loads(path.read_text())
        return cards

    def checkpoint(self, trial_id: str) -> Path | None:
        """The trial's last checkpoint (in-trial runs in their Tune folder, Ray Train runs
        under tune/ray_train)."""
        found = []
        for folder in (self.folder.trial_dir(trial_id), self.folder.train_dir / trial_id):
            for path in folder.glob("checkpoint_*/engine.pt"):
                index = re.findall(r"\d+", path.parent.name)
                found.append((int(index[-1]) if index else -1, path.stat().st_mtime, path))
        return max(found)[2] if found else None

    def teacher_network(self, arch: str):
        """The pretrained teacher the run kept (teachers/<arch>.pt), checked against its card."""
        # torch takes 2 s and more to import, this module 0.5 s: torch only once a run is
        # loaded, so a wrong folder is refused at once (here and below).
        import torch

        from sdkd_core.models import build_model  # torch: as above

        kept = self.folder.teachers_dir
        weights, card = kept / f"{arch}.pt", kept / f"{arch}.json"
        if not weights.is_file() or not card.is_file():
            raise Skipped(f"the run folder keeps no copy of teacher {arch} (teachers/{arch}.pt); "
                          "runs made before teachers were kept cannot show the teacher")
        if file_sha256(weights) != json.loads(card.read_text()).get("weights_sha256"):
            raise Skipped(f"teachers/{arch}.pt does not match the hash in its card")
        info = self.info
        model = build_model(arch, info.num_classes, info.in_channels)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.eval()

    def trial_method(self, trial_id: str, teacher):
        """The trial's method (a `Distiller`, in eval mode) with its final checkpoint loaded,
        built from the trial's own params.json."""
        from sdkd_core.checkpoint import load_checkpoint  # torch: see teacher_network
        from sdkd_core.distillers import build_distiller  # torch
        from sdkd_core.models import build_model  # torch

        params_file = self.folder.trial_dir(trial_id) / "params.json"
        checkpoint = self.checkpoint(trial_id)
        if not params_file.is_file() or checkpoint is None:
            raise Skipped(f"trial {trial_id} left no params.json or checkpoint in "
                          f"{params_file.parent.parent.name}/")
        trial = PlannedTrial.from_config(json.loads(params_file.read_text()))
        info = self.info
        student = build_model(trial.student, info.num_classes, info.in_channels)
        method = build_distiller(trial.method, student, teacher, trial.params,
                                 task=info.task)
        method.load_state_dict(load_checkpoint(checkpoint)["method"])
        return method.eval()


def load_run(path: str | Path) -> Run:
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; pass a run folder written by study/sweep.py "
                        "(runs/<name>)")
    folder = RunFolder(root)
    for needed in (folder.study_json, folder.results_csv):
        if not needed.is_file():
            raise UserError(f"{root} is not a run folder (no {needed.name}); pass the folder "
                            "study/sweep.py wrote, e.g. runs/ablations")
    record = folder.read_study()
    try:
        results = pd.read_csv(folder.results_csv)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"{root}: cannot read its results.csv "
                        f"({str(err).splitlines()[0]}); rebuild it with study/sweep.py "
                        "--resume") from None
    except pd.errors.EmptyDataError:
        results = pd.DataFrame()
    if not isinstance(record, dict) or not isinstance(record.get("space"), dict):
        raise UserError(f"{folder.study_json} is not a study record (no space); it must be "
                        "the file study/sweep.py wrote")
    space = record["space"]
    task = get_task((record.get("dataset_info") or {}).get("task", "classification"))
    missing = [c for c in required_columns(task) if c not in results.columns]
    if missing:
        raise UserError(f"{folder.results_csv} lacks column(s) {', '.join(missing)}; rebuild it "
                        f"with: python study/sweep.py --space {folder.space_yaml} --output "
                        f"{root} --resume")
    finished = results[results["status"].isin(FINISHED)]
    if finished.empty:
        counts = results["status"].value_counts().to_dict()
        seen = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
        raise UserError(f"{root} has no finished trials yet (trials: {seen}); let the sweep "
                        "finish or resume it with --resume")
    results = results.astype({"seed": int, "epochs": int, "trial_id": str})
    epochs = pd.read_csv(folder.epochs_csv) if folder.epochs_csv.is_file() else pd.DataFrame()
    if space.get("plugins"):  # the researcher's own methods, registered before labels are read
        try:
            load_plugins(space["plugins"])
        except UserError as err:
            raise UserError(f"{folder.study_json}: plugins: {err}") from None
    return Run(folder, record, results, epochs)


def pair_label(teacher: str, student: str) -> str:
    return f"{teacher} → {student}"


def method_class(name: str):
    """The registered method class of `name`, or None (a method an old run folder names that
    is no longer registered)."""
    from sdkd_core.distillers import get_method  # torch: see teacher_network

    try:
        return get_method(name)
    except UserError:
        return None


def method_label(name: str) -> str:
    """How tables, plots and reports name a method: its registered `label`, else its name."""
    cls = method_class(name)
    return cls.label if cls is not None else name


def method_order(names) -> list[str]:
    """Registry order (a newly registered method lands in its place), unknown names sorted."""
    from sdkd_core.distillers import METHODS  # torch: see teacher_network

    names = set(names)
    return [m for m in METHODS if m in names] + sorted(names - set(METHODS))
