"""One sweep trial: the Tune trial function, and the Ray Train worker loop it may start.

Two ways to run a trial's epochs through the same `sdkd_core` engine:

- in the Tune trial's own process (single-worker CPU trials): no extra actors, so a small
  trial pays Tune's overhead only;
- through a `TorchTrainer` (several workers, or GPUs): Ray Train starts the workers, sets up
  DDP (`prepare_model`), shards the data by rank, and relays each epoch's metrics to Tune with
  `TuneReportCallback`.

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

from sdkd_core.engine import DivergedError, Recipe, load_checkpoint, save_checkpoint
from study.distill import DistillRun, prepare
from study.reaper import record_placement_group
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
    teacher_epochs: int
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

    def distill_run(self, config: dict[str, Any]) -> DistillRun:
        return DistillRun(
            method=config["method"], teacher=config["teacher"], student=config["student"],
            dataset=self.dataset, recipe=Recipe.from_dict(self.recipe), seed=config["seed"],
            n_train=self.n_train, n_test=self.n_test, overrides=dict(config["params"]),
            teacher_recipe=Recipe(epochs=self.teacher_epochs),
            teacher_n_train=self.teacher_n_train, data_root=self.data_root,
        )

    def trial_resources(self) -> dict[str, float]:
        """What Tune reserves for the trial process itself."""
        if self.executor == "in_trial":
            gpu = (self.gpus_per_trial or 1.0) if self.use_gpu else 0.0
            return {"cpu": self.cpus_per_worker, "gpu": gpu}
        # The trial only drives Ray Train's controller; the workers hold the real resources
        # (Tune refuses an empty request, hence a token share).
        return {"cpu": 0.01}


def train_epochs(spec: DistillRun, context: TrialContext, report, checkpoint, *,
                 device: str = "auto", rank: int = 0, world_size: int = 1, wrap=None) -> None:
    """Run the remaining epochs of `spec`; `report(metrics, checkpoint_dir_or_None)` per epoch.

    `checkpoint` is the Tune/Train checkpoint to continue from, or None for a fresh start.
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
            report(stats, folder if rank == 0 else None)


def diverged_result(err: DivergedError) -> dict[str, Any]:
    """The last result of a diverged trial; its metrics are NaN so no search counts them."""
    return {"epoch": err.epoch, "diverged": 1, "train_loss": err.loss,
            "test_acc": math.nan, "test_acc_best": math.nan}


def tune_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The function Tune runs for each trial."""
    if context.executor == "ray_train":
        _fit_with_ray_train(config, context)
        return
    from ray import tune

    # Ray gives the trial `cpus_per_worker` CPUs; more threads than that only contend.
    torch.set_num_threads(max(1, int(context.cpus_per_worker)))

    def report(metrics, folder):
        checkpoint = tune.Checkpoint.from_directory(folder) if folder else None
        tune.report(metrics, checkpoint=checkpoint)

    train_epochs(context.distill_run(config), context, report, tune.get_checkpoint())


def ray_train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: the same engine, DDP-wrapped when there are several ranks."""
    import ray.train
    import ray.train.torch

    context = TrialContext(**loop_config["context"])
    spec = context.distill_run(loop_config["trial"])
    train_ctx = ray.train.get_context()
    rank, world_size = train_ctx.get_world_rank(), train_ctx.get_world_size()
    if rank == 0:  # so the sweep can free it if Tune ends the trial under the controller
        record_placement_group(Path(context.train_storage) / loop_config["trial"]["trial_name"])
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(context.cpus_per_worker)))
    wrap = None
    if world_size > 1:
        # Methods may leave a head idle in a step (e.g. SDKD before its phase boundary).
        wrap = lambda module: ray.train.torch.prepare_model(  # noqa: E731
            module, move_to_device=False,
            parallel_strategy_kwargs={"find_unused_parameters": True})

    def report(metrics, folder):
        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint)

    train_epochs(spec, context, report, ray.train.get_checkpoint(), device=str(device),
                 rank=rank, world_size=world_size, wrap=wrap)


def _fit_with_ray_train(config: dict[str, Any], context: TrialContext) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    per_worker = {"CPU": context.cpus_per_worker}
    if context.use_gpu:
        per_worker["GPU"] = (context.gpus_per_trial or context.num_workers) / context.num_workers
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
