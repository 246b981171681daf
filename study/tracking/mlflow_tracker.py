"""MLflow: one parent run per study, one child run per trial (its method, pair, seed, role and
sampled parameters as params; every epoch's metrics at step = epoch; results.csv's final row
as `result.*` metrics and a `status` tag), and the report as the parent's artifact.

The default store is a SQLite file inside the run folder (tracking/mlflow.db, artifacts
beside it), opened with `mlflow ui --backend-store-uri sqlite:///...`. What a store holds is
read back on --resume: the parent by the run folder's key, each child by its trial's name,
the last epoch logged by its `epoch` metric; so a resumed sweep adds what is new.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from sdkd_core.errors import UserError
from sdkd_core.files import write_json
from study.study_object import Study
from study.tracking.section import MlflowSection
from study.tracking.trackers import FAILED, TrackedTrial, study_key, study_params

MAX_METRICS, MAX_PARAMS = 1000, 100  # what one log_batch takes
KEY_TAG, TRIAL_TAG = "sdkd.study_key", "sdkd.trial"


def open_tracker(section: MlflowSection, study: Study) -> MlflowTracker:
    return MlflowTracker(section, study)


def store_uri(section: MlflowSection, study: Study) -> str:
    return section.uri or f"sqlite:///{study.folder.root / 'tracking' / 'mlflow.db'}"


class MlflowTracker:
    def __init__(self, section: MlflowSection, study: Study):
        # The store's first opening creates its tables and logs each migration step at INFO.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.uri = store_uri(section, study)
        self.embedded = section.uri is None
        if section.uri is None:
            (study.folder.root / "tracking").mkdir(parents=True, exist_ok=True)
        else:  # a server that does not answer: told in seconds, not after minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        self.client = MlflowClient(tracking_uri=self.uri)
        try:
            self.experiment_id = self._experiment(section.experiment or study.name, section,
                                                  study)
        except MlflowException as err:
            raise UserError(f"tracking.mlflow: the store at {self.uri} refused or did not "
                            f"answer ({str(err).strip()[:160]}...); start it (mlflow server), "
                            "fix tracking.mlflow.uri (--mlflow URI), or leave it out") from None
        self.parent = self._parent(study)
        # Written after the trackers open (a refused tracker leaves no sweep behind): sent
        # with the first sync, again on --resume.
        self.files = [study.folder.space_yaml, study.folder.study_json]
        # trial name -> [run id, last epoch logged, status logged, params logged here]
        self.children: dict[str, list] = {}
        for run in self.client.search_runs(
                [self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent}'",
                max_results=50000):
            self.children[run.data.tags[TRIAL_TAG]] = [
                run.info.run_id, int(run.data.metrics.get("epoch", 0)),
                run.data.tags.get("status"), False]

    def _experiment(self, name: str, section: MlflowSection, study: Study) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # Inside the run folder, the artifacts too (a server keeps its own).
        where = None if section.uri else (study.folder.root / "tracking" /
                                          "mlflow-artifacts").resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=where)

    def _parent(self, study: Study) -> str:
        """The study's parent run: the one this run folder names (tracking/mlflow.json, so a
        moved folder finds it), else the one tagged with the folder's key (a sweep killed
        before it wrote the file), else a new one."""
        noted = study.folder.root / "tracking" / "mlflow.json"
        known = json.loads(noted.read_text()) if noted.exists() else {}
        # The store inside the run folder moves with it; a server is the same by its URI.
        store = "embedded" if self.embedded else self.uri
        run_id = known.get("parent") if known.get("store") == store else None
        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except MlflowException:  # deleted from the store since
                run_id = None
        if run_id is None:
            runs = self.client.search_runs([self.experiment_id],
                                           f"tags.`{KEY_TAG}` = '{study_key(study)}'",
                                           max_results=1)
            run_id = runs[0].info.run_id if runs else None
        if run_id is None:
            run_id = self._new_parent(study)
        else:
            self.client.update_run(run_id, status="RUNNING")
        write_json(noted, {"store": store, "experiment_id": self.experiment_id,
                           "parent": run_id})
        return run_id

    def _new_parent(self, study: Study) -> str:
        key = study_key(study)
        run = self.client.create_run(self.experiment_id, run_name=study.name, tags={
            KEY_TAG: key, "sdkd.run_folder": str(study.folder.root),
            "sdkd.subject": study.subject, "sdkd.executor": study.executor})
        run_id = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in study_params(study).items()]
        for start in range(0, len(params), MAX_PARAMS):
            self.client.log_batch(run_id, params=params[start:start + MAX_PARAMS])
        return run_id

    # ------------------------------------------------------------ the trials

    def sync(self, trials: list[TrackedTrial]) -> None:
        while self.files:
            self.client.log_artifact(self.parent, str(self.files.pop()))
        for trial in trials:
            if not trial.epochs and not trial.ended:
                continue  # pending: no run yet
            child = self.children.get(trial.name)
            if child is None:
                run = self.client.create_run(
                    self.experiment_id, run_name=trial.name,
                    tags={MLFLOW_PARENT_RUN_ID: self.parent, TRIAL_TAG: trial.name,
                          **{f"sdkd.{k}": str(v) for k, v in trial.params.items()}})
                child = self.children[trial.name] = [run.info.run_id, 0, None, False]
            self._sync_trial(trial, child)

    def _sync_trial(self, trial: TrackedTrial, child: list) -> None:
        run_id, last_epoch, status, params_logged = child
        if not params_logged:  # again after a resume: the same values, which MLflow allows
            self.client.log_batch(run_id, params=[Param(k, str(v))
                                                  for k, v in trial.params.items()])
            child[3] = True
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(row["epoch"])) for row in trial.epochs
                   if int(row["epoch"]) > last_epoch for k, v in row.items()]
        for start in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS])
        if trial.epochs:
            child[1] = max(last_epoch, int(trial.epochs[-1]["epoch"]))
        if trial.status == status:
            return
        if trial.ended:
            self.client.log_batch(
                run_id, metrics=[Metric(f"result.{k}", v, now, 0)
                                 for k, v in trial.result.items()],
                tags=[RunTag("status", trial.status)])
            self.client.set_terminated(run_id, "FAILED" if trial.status in FAILED
                                       else "FINISHED")
        else:
            self.client.set_tag(run_id, "status", trial.status)
            if trial.status == "running":  # again, after a resume (or a retried error)
                self.client.update_run(run_id, status="RUNNING")
        child[2] = trial.status

    # ------------------------------------------------------------ the study

    def add_report(self, report_dir: Path) -> None:
        self.client.log_artifacts(self.parent, str(report_dir), "report")

    def close(self, interrupted: bool) -> None:
        if interrupted:
            for child in self.children.values():
                if child[2] == "running":  # "interrupted": a resumed sweep sets it running
                    self.client.set_tag(child[0], "status", "interrupted")
                    self.client.set_terminated(child[0], "KILLED")
                    child[2] = "interrupted"
        self.client.set_terminated(self.parent, "KILLED" if interrupted else "FINISHED")

    def how_to_open(self) -> str:
        if self.uri.startswith("sqlite:"):
            return f"  mlflow   mlflow ui --backend-store-uri {self.uri}"
        return f"  mlflow   {self.uri} (experiment {self.experiment_id})"
