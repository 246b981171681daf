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
diverge again, and the sweep goes on.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sdkd_core.checkpoint import load_checkpoint, save_checkpoint
from sdkd_core.engine import DivergedError
from sdkd_core.files import write_json
from sdkd_core.recipe import Recipe
from study.distill import DistillRun, prepare
from study.runfolder import TRAIN_HISTORY_FILE
from study.runfolder.trials import PlannedTrial
from study.teachers import TeacherCache

CHECKPOINT_FILE = "engine.pt"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (the per-trial part is the Tune config)."""

    dataset: str
    data_root: str | None
    n_train: int | None
    n_test: int | None
    recipe: dict[str, Any]
    teacher_recipe: dict[str, Any]
    teacher_n_train: int | None
    cache_dir: str
    train_storage: str  # absolute: Ray Train's run folders of multi-worker trials
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 0
    executor: str = "in_trial"  # or "ray_train"
    compile: bool = False
    sync_batchnorm: bool = False  # SyncBatchNorm in the modules that train (several workers)
    plugins: tuple[str, ...] = ()  # the space's plugin modules, imported in every trial process
    plugin_paths: tuple[str, ...] = ()  # where the sweep found them
    teacher_checkpoints: tuple[tuple[str, str], ...] = ()  # (arch, published checkpoint file)
    val_split: float | int | None = None

    def load_plugins(self) -> None:
        """Register the space's own methods in this (fresh) trial or worker process."""
        from sdkd_core.plugins import load_plugins

        load_plugins(self.plugins, self.plugin_paths)

    def distill_run(self, trial: PlannedTrial) -> DistillRun:
        """The trial's run: the sweep's recipe under its pair's own fields."""
        return DistillRun(
            trial, dataset=self.dataset, recipe=Recipe.from_dict({**self.recipe, **trial.recipe}),
            n_train=self.n_train, n_test=self.n_test,
            teacher_recipe=Recipe.from_dict(self.teacher_recipe),
            teacher_n_train=self.teacher_n_train, data_root=self.data_root,
            teacher_checkpoint=dict(self.teacher_checkpoints).get(trial.teacher),
            val_split=self.val_split,
        )

    def worker_resources(self) -> dict[str, float]:
        """What each Ray Train worker of a trial holds."""
        per_worker = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            per_worker["GPU"] = (self.gpus_per_trial or self.num_workers) / self.num_workers
        return per_worker

    def trial_resources(self) -> dict[str, float]:
        """What Tune reserves for the trial process itself."""
        if self.executor == "in_trial":
            gpu = (self.gpus_per_trial or 1.0) if self.use_gpu else 0.0
            return {"cpu": self.cpus_per_worker, "gpu": gpu}
        # The trial only drives Ray Train's controller; the workers hold the real resources.
        # Tune refuses an empty request, and a token CPU share would leave a 2-CPU machine
        # 1.98 CPUs: one 1-CPU worker group too few. A mebibyte of memory is never short.
        return {"cpu": 0, "memory": 2**20}


def train_epochs(spec: DistillRun, context: TrialContext, report, checkpoint, *,
                 device: str = "auto", rank: int = 0, world_size: int = 1, wrap=None,
                 history_file: Path | None = None) -> None:
    """Run the remaining epochs of `spec`; `report(metrics, checkpoint_dir_or_None)` per epoch.

    `checkpoint` is the Tune/Train checkpoint to continue from, or None for a fresh start.
    `history_file`: where rank 0 keeps every finished epoch's metrics before reporting it. Ray
    Train persists its checkpoint before Tune logs the report, so a sweep killed in between
    resumes after an epoch that Tune never recorded; the run folder's tables take it from here.
    """
    engine = prepare(spec, TeacherCache(context.cache_dir), device=device, log=lambda _: None,
                     rank=rank, world_size=world_size, wrap=wrap, compile=context.compile)
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            engine.load_state_dict(load_checkpoint(Path(folder) / CHECKPOINT_FILE))
    while engine.epoch < engine.recipe.epochs:
        try:
            stats = engine.run_epoch()
        except DivergedError as err:
            # Every rank sees the same (all-reduced) loss, so every rank reports and stops.
            report(diverged_result(err), None)
            return
        with tempfile.TemporaryDirectory(prefix="sdkd-ckpt-") as folder:
            if rank == 0:
                save_checkpoint(engine.state_dict(), Path(folder) / CHECKPOINT_FILE)
                if history_file is not None:
                    write_json(history_file, [{**row, "workers": world_size}
                                              for row in engine.history])
            report({**stats, "workers": world_size}, folder if rank == 0 else None)


def diverged_result(err: DivergedError) -> dict[str, Any]:
    """The last result of a diverged trial; its metrics are NaN so no search counts them."""
    return {"epoch": err.epoch, "diverged": 1, "train_loss": err.loss,
            **{k: math.nan for k in ("val_acc", "val_acc_best", "test_acc", "test_acc_best")}}


def tune_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The function Tune runs for each trial."""
    context.load_plugins()
    if context.executor == "ray_train":
        _fit_with_ray_train(config, context)
        return
    from ray import tune

    # Ray gives the trial `cpus_per_worker` CPUs; more threads than that only contend.
    torch.set_num_threads(max(1, int(context.cpus_per_worker)))

    def report(metrics, folder):
        checkpoint = tune.Checkpoint.from_directory(folder) if folder else None
        tune.report(metrics, checkpoint=checkpoint)

    train_epochs(context.distill_run(PlannedTrial.from_config(config)), context, report,
                 tune.get_checkpoint())


def ray_train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: the same engine, DDP-wrapped when there are several ranks."""
    import ray.train
    import ray.train.torch

    from study.reaper import record_placement_group  # imports Ray: not at the top

    context = TrialContext(**loop_config["context"])
    context.load_plugins()
    spec = context.distill_run(PlannedTrial.from_config(loop_config["trial"]))
    train_ctx = ray.train.get_context()
    rank, world_size = train_ctx.get_world_rank(), train_ctx.get_world_size()
    run_dir = Path(context.train_storage) / spec.trial.name
    if rank == 0:  # so the sweep can free it if Tune ends the trial under the controller
        record_placement_group(run_dir)
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(context.cpus_per_worker)))
    else:
        torch.cuda.set_device(device)
    wrap = ddp_wrap(device, context.sync_batchnorm) if world_size > 1 else None

    def report(metrics, folder):
        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint)

    train_epochs(spec, context, report, ray.train.get_checkpoint(), device=str(device),
                 rank=rank, world_size=world_size, wrap=wrap,
                 history_file=run_dir / TRAIN_HISTORY_FILE)


def ddp_wrap(device: torch.device, sync_batchnorm: bool = False):
    """How a worker of a multi-worker trial wraps its method; the process group must exist."""
    from torch.nn.parallel import DistributedDataParallel

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


def _fit_with_ray_train(config: dict[str, Any], context: TrialContext) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    per_worker = context.worker_resources()
    trainer = TorchTrainer(
        ray_train_worker,
        train_loop_config={"trial": config, "context": asdict(context)},
        scaling_config=ScalingConfig(num_workers=context.num_workers, use_gpu=context.use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(
            # A fixed name per trial: a restarted trial finds its run and resumes from it.
            name=config["trial_name"], storage_path=context.train_storage,
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=context.max_failures),
        ),
    )
    trainer.fit()
