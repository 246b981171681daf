"""Weights & Biases: one run per trial (grouped by study, `job_type` its role; its method,
pair, seed and sampled parameters as config; every epoch's metrics at step = epoch;
results.csv's final row in its summary as `result.*`), and one `study` run in the group that
holds the study file as config and the report as an artifact.

Online needs a login (`wandb login` or WANDB_API_KEY); offline (`mode: offline` or
WANDB_MODE=offline) writes the runs under tracking/wandb/ in the run folder, uploaded later
with `wandb sync`. Run ids are fixed by the run folder and the trial, and what each run has
received is kept in tracking/wandb.json, so a resumed sweep resumes the same runs (W&B's
`resume="allow"`) with the epochs they lack.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import wandb

from sdkd_core.errors import UserError
from sdkd_core.files import write_json
from study.study_object import Study
from study.tracking.section import WandbSection
from study.tracking.trackers import FAILED, TrackedTrial, study_key, study_params


def open_tracker(section: WandbSection, study: Study) -> WandbTracker:
    return WandbTracker(section, study)


class WandbTracker:
    def __init__(self, section: WandbSection, study: Study):
        self.mode = section.mode or os.environ.get("WANDB_MODE") or "online"
        if self.mode == "online":
            try:  # the key only (no network): a missing login is one line before anything
                wandb.login(verify=False)
            except wandb.errors.Error as err:
                raise UserError(f"tracking.wandb: {err}; or set tracking.wandb.mode: offline "
                                "(WANDB_MODE=offline) and upload later with wandb sync") \
                    from None
        self.folder = study.folder.root / "tracking"
        self.dir = self.folder / "wandb"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.folder / "wandb.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() \
            else {"trials": {}}
        self.key = study_key(study)
        self.common = {"project": section.project or study.name, "entity": section.entity,
                       "group": study.name, "dir": str(self.dir), "mode": self.mode,
                       "resume": "allow", "reinit": "create_new",
                       # The sweep's terminal and machine are the sweep's: no console capture,
                       # no system metrics per run.
                       "settings": wandb.Settings(console="off", silent=True,
                                                  x_disable_stats=True)}
        self.open_runs: dict[str, wandb.Run] = {}
        self.study_run = self._init("study", name=study.name, job_type="study",
                                    config=study_params(study))

    def _init(self, what: str, **fields) -> wandb.Run:
        # A W&B id holds letters, digits, - and _; the run folder's key keeps sweeps apart.
        run_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.key}-{what}")[:128]
        return wandb.init(id=run_id, **self.common, **fields)

    def sync(self, trials: list[TrackedTrial]) -> None:
        logged = self.state["trials"]
        for trial in trials:
            if not trial.epochs and not trial.ended:
                continue
            seen = logged.setdefault(trial.name, {"epoch": 0, "status": None})
            new = [row for row in trial.epochs if int(row["epoch"]) > seen["epoch"]]
            if not new and trial.status == seen["status"]:
                continue
            run = self.open_runs.get(trial.name)
            if run is None:
                run = self.open_runs[trial.name] = self._init(
                    f"trial-{trial.name}", name=trial.name,
                    job_type=str(trial.params.get("role", "trial")), config=trial.params)
            for row in new:
                run.log(row, step=int(row["epoch"]))
                seen["epoch"] = int(row["epoch"])
            if trial.ended:
                run.summary.update({f"result.{k}": v for k, v in trial.result.items()})
                run.summary["status"] = trial.status
                run.finish(exit_code=1 if trial.status in FAILED else 0)
                del self.open_runs[trial.name]
            seen["status"] = trial.status
        write_json(self.state_file, self.state)

    def add_report(self, report_dir: Path) -> None:
        artifact = wandb.Artifact(f"{self.common['group']}-report", type="report")
        artifact.add_dir(str(report_dir))
        self.study_run.log_artifact(artifact)

    def close(self, interrupted: bool) -> None:
        for run in self.open_runs.values():
            run.finish(exit_code=1 if interrupted else 0)
        self.open_runs.clear()
        self.study_run.finish(exit_code=1 if interrupted else 0)
        write_json(self.state_file, self.state)

    def how_to_open(self) -> str:
        if self.mode == "offline":
            return f"  wandb    offline runs; upload: wandb sync {self.dir}/wandb/offline-run-*"
        return f"  wandb    project {self.common['project']}, group {self.common['group']}"
