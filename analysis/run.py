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
import yaml

from sdkd_core.errors import UserError
from study.runfolder import IDENTITY, RunFolder

REQUIRED_COLUMNS = (*IDENTITY, "test_acc", "test_acc_best", "epochs", "status")
# "stopped" trials were cut short by ASHA at a rung: finished, but with fewer epochs.
FINISHED = ("completed", "stopped")
class Skipped(Exception):
    """A figure the run has no data for; the message says why (shown in the report)."""


METRICS = {"test_acc": "last epoch", "test_acc_best": "best epoch"}


@dataclass
class Run:
    folder: RunFolder
    space: dict[str, Any]
    results: pd.DataFrame
    epochs: pd.DataFrame

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
    def n_epochs(self) -> int:
        return int(self.space["recipe"]["epochs"])

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


def load_run(path: str | Path) -> Run:
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; pass a run folder written by study/sweep.py "
                        "(runs/<name>)")
    folder = RunFolder(root)
    for needed in (folder.space_yaml, folder.results_csv):
        if not needed.is_file():
            raise UserError(f"{root} is not a run folder (no {needed.name}); pass the folder "
                            "study/sweep.py wrote, e.g. runs/ablations")
    try:
        space = yaml.safe_load(folder.space_yaml.read_text())
        results = pd.read_csv(folder.results_csv)
    except (yaml.YAMLError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"{root}: cannot read its space.yaml or results.csv "
                        f"({str(err).splitlines()[0]}); rebuild them with study/sweep.py "
                        "--resume") from None
    except pd.errors.EmptyDataError:
        results = pd.DataFrame()
    if not isinstance(space, dict) or "dataset" not in space or "recipe" not in space:
        raise UserError(f"{folder.space_yaml} is not a resolved space (no dataset or recipe); "
                        "it must be the copy study/sweep.py wrote")
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
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
    return Run(folder, space, results, epochs)


def pair_label(teacher: str, student: str) -> str:
    return f"{teacher} → {student}"
