"""One sweep trial: the Tune trial function, and the Ray Train worker loop it may start.

Two ways to run a trial's epochs through the same `sdkd_core` engine:

- in the Tune trial's own process (single-worker CPU trials): no extra actors, so a small
  trial pays Tune's overhead only;
- through a `TorchTrainer` (several workers, or GPUs): Ray Train starts the workers and their
  process group, `ddp_wrap` wraps the method in DDP, the engine splits the global batch and
  shards the data by rank, and `TuneReportCallback` relays each epoch's metrics to Tune.

Either way every epoch is reported with a checkpoint of the complete engine state, so a trial
restarted after a crash continues from its last finished epoch, bit for bit. A trial whose loss
becomes NaN or infinite reports one last `diverged` result and ends: retrying it would only
diverge again, and the sweep goes on. A trial records its end in the run folder (`ended/`)
before it returns, and a trial whose end is recorded returns at once when Tune starts it again
(a sweep killed between the end and Tune's next snapshot of the experiment).

A trial receives the study object whole (`tune.with_parameters`) and its `PlannedTrial`.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sdkd_core.checkpoint import load_checkpoint, save_checkpoint
from sdkd_core.engine import DivergedError
from sdkd_core.files import write_json
from study.distill import prepare
from study.reaper import record_placement_group
from study.runfolder.trials import PlannedTrial
from study.study_object import Study
from study.teachers import TeacherCache

CHECKPOINT_FILE = "engine.pt"


def train_epochs(trial: PlannedTrial, study: Study, report, checkpoint, *,
                 device: str = "auto", rank: int = 0, world_size: int = 1,
                 wrap=None) -> dict[str, Any] | None:
    """Run the remaining epochs of `trial`; `report(metrics, checkpoint_dir_or_None)` per
    epoch. Returns the last result (None when there was no epoch left, or when the sweep
    ended the trial meanwhile).

    `checkpoint` is the Tune/Train checkpoint to continue from, or None for a fresh start.
    Rank 0 writes every finished epoch's metrics into the run folder's history before it
    reports the epoch: the history, not Tune's logs, is the record the tables are built from
    (a sweep killed between a checkpoint and Tune's log of its report resumes after an epoch
    Tune never logged; Tune starts the logs of a restarted Ray Train trial afresh).
    """
    engine = prepare(trial, study.file.dataset, study.recipe_of(trial), study.teacher_of(trial),
                     TeacherCache(study.cache_dir), device=device, log=lambda _: None,
                     rank=rank, world_size=world_size, wrap=wrap,
                     compile=study.file.resources.compile)
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            engine.load_state_dict(load_checkpoint(Path(folder) / CHECKPOINT_FILE))
    last = None
    while engine.epoch < engine.recipe.epochs:
        try:
            stats = engine.run_epoch()
        except DivergedError as err:
            # Every rank sees the same (all-reduced) loss, so every rank reports and stops.
            last = diverged_result(err, study.metric)
            report(last, None)
            return last
        if rank == 0 and study.folder.end_of(trial.name) is not None:
            # ASHA stopped the trial while this epoch ran (Tune hears of a Ray Train epoch a
            # poll later): its end record stands and the history never goes past it.
            return None
        with tempfile.TemporaryDirectory(prefix="sdkd-ckpt-") as folder:
            if rank == 0:
                save_checkpoint(engine.state_dict(), Path(folder) / CHECKPOINT_FILE)
                write_json(study.folder.history_file(trial.name),
                           [{**row, "workers": world_size} for row in engine.history])
            last = {**stats, "workers": world_size}
            report(last, folder if rank == 0 else None)
    return last


def diverged_result(err: DivergedError, metric: str) -> dict[str, Any]:
    """The last result of a diverged trial; its metrics (the search's `metric` and its
    kin: val_acc, val_acc_best, test_acc, ...) are NaN so no search counts them."""
    name = metric.removeprefix("val_").removeprefix("test_").removesuffix("_best")
    return {"epoch": err.epoch, "diverged": 1, "train_loss": err.loss,
            **{f"{split}_{name}{best}": math.nan for split in ("val", "test")
               for best in ("", "_best")}}


def record_end(study: Study, trial: PlannedTrial, last: dict[str, Any] | None) -> None:
    if last is not None:
        study.folder.record_end(trial.name, "diverged" if last.get("diverged") else "completed",
                                last)


def tune_trial(config: dict[str, Any], study: Study) -> None:
    """The function Tune runs for each trial."""
    trial = PlannedTrial.from_config(config)
    if study.folder.end_of(trial.name) is not None:
        return  # it ended before the sweep was killed; its records stand
    study.load_plugins()
    if study.executor == "ray_train":
        _fit_with_ray_train(trial, study)
        return
    # Ray gives the trial `cpus_per_worker` CPUs; more threads than that only contend.
    torch.set_num_threads(max(1, int(study.file.resources.cpus_per_worker)))

    def report(metrics, folder):
        checkpoint = tune.Checkpoint.from_directory(folder) if folder else None
        tune.report(metrics, checkpoint=checkpoint)

    record_end(study, trial, train_epochs(trial, study, report, tune.get_checkpoint()))


def ray_train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: the same engine, DDP-wrapped when there are several ranks."""
    study: Study = loop_config["study"]
    study.load_plugins()
    trial = PlannedTrial.from_config(loop_config["trial"])
    train_ctx = ray.train.get_context()
    rank, world_size = train_ctx.get_world_rank(), train_ctx.get_world_size()
    run_dir = study.folder.train_dir.resolve() / trial.name
    if rank == 0:  # so the sweep can free it if Tune ends the trial under the controller
        record_placement_group(run_dir)
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(study.file.resources.cpus_per_worker)))
    else:
        torch.cuda.set_device(device)
    wrap = ddp_wrap(device, study.file.resources.sync_batchnorm) if world_size > 1 else None

    def report(metrics, folder):
        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint)

    last = train_epochs(trial, study, report, ray.train.get_checkpoint(), device=str(device),
                        rank=rank, world_size=world_size, wrap=wrap)
    if rank == 0:
        record_end(study, trial, last)


def ddp_wrap(device: torch.device, sync_batchnorm: bool = False):
    """How a worker of a multi-worker trial wraps its method; the process group must exist."""
    def wrap(method: nn.Module) -> nn.Module:
        if sync_batchnorm:
            with_sync_batchnorm(method)
        cuda = device.type == "cuda"
        per_gpu = {"device_ids": [device], "output_device": device} if cuda else {}
        # Methods may leave a head idle in a step (e.g. SDKD before its phase boundary).
        return DistributedDataParallel(method, find_unused_parameters=True, **per_gpu)

    return wrap


def with_sync_batchnorm(method: nn.Module) -> nn.Module:
    """`method` with SyncBatchNorm in every module it registers (student, FFB, peer, shadow
    head, ...): what trains. A frozen teacher stays outside the module tree (`Distiller`), so
    neither this nor DDP touches it or its statistics. Torch's SyncBatchNorm runs on GPUs only.
    """
    # Children are replaced in place (same parameters and buffers); the method is no BatchNorm
    # itself, so it stays the very module the engine and its optimizers hold.
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    assert converted is method
    return method


def _fit_with_ray_train(trial: PlannedTrial, study: Study) -> None:
    r = study.file.resources
    trainer = TorchTrainer(
        ray_train_worker,
        train_loop_config={"trial": trial.to_config(), "study": study},
        scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                                     resources_per_worker=study.worker_resources()),
        run_config=RunConfig(
            # A fixed name per trial: a restarted trial finds its run and resumes from it.
            name=trial.name, storage_path=str(study.folder.train_dir.resolve()),
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=r.max_failures),
        ),
    )
    trainer.fit()
