"""The training loop: one epoch, evaluation, and a complete resumable state. Ray-free.

Per step the loop stays on the device: losses and accuracy are summed as tensors and read once
per epoch, so a GPU never waits on the host mid-epoch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sdkd_core.data import ImageData
from sdkd_core.distillers.base import Distiller
from sdkd_core.distributed import broadcast_buffers, split_batch, sum_across_ranks
from sdkd_core.errors import DivergedError, UserError
from sdkd_core.recipe import Recipe
from sdkd_core.tasks import get_task


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # the engine runs on these only
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but no CUDA GPU is visible; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"device '{name}': this machine has {torch.cuda.device_count()} GPU(s); "
                        f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


@dataclass
class Engine:
    """Trains a `Distiller` on `data` with `recipe`; `wrap` lets a caller add DDP.

    `recipe.batch_size` is the global batch: each of `world_size` ranks takes its share per
    step, so any number of ranks takes the same optimizer steps per epoch (and, together, the
    very batches one rank would). `epoch` counts finished epochs; `state_dict()` after any
    epoch resumes exactly.
    """

    method: Distiller
    data: ImageData  # or any data with its `loader`s: the study's StreamedData
    recipe: Recipe
    device: str | torch.device = "auto"
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    wrap: Callable[[nn.Module], nn.Module] | None = None
    # Speed switches, each measured with and without in benchmarks/step_cost.py.
    amp: bool | None = None  # bf16 autocast; None: as `recipe.precision` says
    channels_last: bool = True  # faster on GPUs and, measured, on the CPU (resnet20: +21%)
    compile: bool = False  # torch.compile the training step
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self):
        self.device = select_device(str(self.device))
        rank_batch = split_batch(self.recipe.batch_size, self.world_size)
        self.cuda = self.device.type == "cuda"
        self.use_amp = self.recipe.autocast_bf16(self.cuda) if self.amp is None else bool(self.amp)
        self.task = get_task(self.data.info.task)
        if self.method.task.name != self.task.name:
            raise UserError(f"the method was built for {self.method.task.label} but "
                            f"{self.data.name} is a {self.task.label} dataset")
        self.method.bind_data(self.data.train_y)
        self.method.to(self.device, memory_format=torch.channels_last if self.channels_last
                       else torch.preserve_format)
        self.train_module = self.wrap(self.method) if self.wrap else self.method
        if self.compile:
            self.train_module = torch.compile(self.train_module)
        # The data makes its loaders: in-memory batches (`BatchLoader`), or files streamed
        # through Ray Data (the study's `StreamedLoader`); both yield the same batches.
        common = dict(batch_size=rank_batch, device=self.device, rank=self.rank,
                      world_size=self.world_size, channels_last=self.channels_last,
                      seed=self.seed)
        self.train_loader = self.data.loader("train", inputs=self.method.batch_inputs,
                                             **common)
        self.test_loader = self.data.loader("test", **common)
        self.val_loader = self.data.loader("val", **common) if self.data.has_val else None
        steps = len(self.train_loader)
        if steps == 0:
            raise UserError(f"batch_size={self.recipe.batch_size} is larger than the "
                            f"{len(self.data.train_y)} training images; lower it")
        r = self.recipe
        self.optimizers = {
            group: torch.optim.SGD(params, lr=r.lr, momentum=r.momentum,
                                   weight_decay=r.weight_decay, nesterov=r.nesterov)
            for group, params in self.method.optim_groups().items()
        }
        self.schedulers = {
            group: torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: r.lr_factor(step, steps))
            for group, opt in self.optimizers.items()
        }

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training shard; returns mean losses, accuracy and throughput."""
        self.train_module.train()
        self.method.begin_epoch(self.epoch, self.recipe.epochs, len(self.train_loader))
        self.train_loader.set_epoch(self.epoch)
        sums: dict[str, torch.Tensor] = {}
        scores = None  # the task's metric sums of the training batches
        seen = 0
        start = time.perf_counter()
        for x, y, inputs in self.train_loader.batches():
            with self._autocast():
                logits, losses = self.train_module(x, y, self.epoch, **inputs)
                loss = sum(losses.values())
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in self.optimizers.values():
                opt.step()
            for sched in self.schedulers.values():
                sched.step()
            n = len(y)
            seen += n
            for name, value in (("loss", loss), *losses.items()):
                sums[name] = sums.get(name, 0) + value.detach().float() * n
            batch_scores = self.task.metric_sums(logits, y)
            scores = batch_scores if scores is None else scores + batch_scores
        if self.cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        names = list(sums)
        broadcast_buffers(self.method)  # every rank evaluates the model rank 0 checkpoints
        losses_seen = torch.stack([*(sums[k] for k in names),
                                   torch.tensor(float(seen), device=self.device)])
        totals = sum_across_ranks(torch.cat([losses_seen.double(), scores])).tolist()
        count = totals[len(names)]
        stats = {("train_loss" if k == "loss" else f"loss_{k}"): v / count
                 for k, v in zip(names, totals, strict=False)}
        metric = self.task.metric  # the training batches' score, as augmented (train_acc, ...)
        scored = torch.tensor(totals[len(names) + 1:], dtype=torch.float64)
        stats[f"train_{metric}"] = self.task.metric_values(scored)[metric]
        stats["images_per_s"] = count / elapsed  # all ranks' images: the trial's throughput
        stats["train_s"] = elapsed
        stats["lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"]
        stats.update(self.method.epoch_metrics())
        if self.data.info.from_files:
            stats["files_skipped"] = self._files_skipped()
        if not math.isfinite(stats["train_loss"]):
            raise DivergedError(self.epoch + 1, stats["train_loss"])
        return stats

    def _files_skipped(self) -> int:
        """Files of a file dataset that could not be decoded: all of them in memory (decoded
        once), this epoch's on every rank when streamed."""
        if not hasattr(self.train_loader, "skipped"):
            return int(getattr(self.data, "skipped", 0))
        loaders = [x for x in (self.train_loader, self.val_loader, self.test_loader) if x]
        count = torch.tensor(float(sum(x.skipped for x in loaders)), device=self.device)
        return int(sum_across_ranks(count).item())

    def evaluate(self) -> dict[str, float]:
        """The task's metrics of the student on the full test set (`test_<name>` for each of
        `task.metric_values`: classification's `test_acc`, `test_top5`, `test_loss`), and
        `test_<metric>_<head>` for each extra head the method scores (summed over ranks); the
        same as `val_*` on the validation images when the data holds some."""
        start = time.perf_counter()
        stats = self._scores(self.test_loader, "test")
        if self.val_loader is not None:
            stats.update(self._scores(self.val_loader, "val"))
        stats["eval_s"] = time.perf_counter() - start
        return stats

    @torch.no_grad()
    def _scores(self, loader, split: str) -> dict[str, float]:
        was_training = self.method.training
        self.method.eval()
        names: list[str] = []
        totals = None  # each head's metric sums, one after the other
        for x, y in loader:
            with self._autocast():
                heads = self.method.eval_logits(x)
            batch = torch.cat([self.task.metric_sums(heads[name], y) for name in heads])
            names = list(heads)
            totals = batch if totals is None else totals + batch
        self.method.train(was_training)
        per_head = sum_across_ranks(totals).cpu().chunk(len(names))
        values = dict(zip(names, (self.task.metric_values(v) for v in per_head), strict=True))
        stats = {f"{split}_{key}": v for key, v in values["student"].items()}
        metric = self.task.metric
        stats.update({f"{split}_{metric}_{name}": values[name][metric] for name in names[1:]})
        return stats

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate, and append the row to `history`."""
        stats = {"epoch": self.epoch + 1, **self.train_epoch(), **self.evaluate()}
        self.epoch += 1
        for split in ("test", "val"):
            key = f"{split}_{self.task.metric}"
            if key in stats:
                stats[f"{key}_best"] = self.task.best([row[key] for row in self.history]
                                                      + [stats[key]])
        self.history.append(stats)
        return stats

    def fit(self, on_epoch: Callable[[dict[str, float]], None] | None = None):
        """Run the remaining epochs; `on_epoch` sees each epoch's row (and may checkpoint)."""
        while self.epoch < self.recipe.epochs:
            stats = self.run_epoch()
            if on_epoch is not None:
                on_epoch(stats)
        return self.history

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizers, schedules, RNG, history."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.cuda:
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "recipe": self.recipe.to_dict(),
            "method": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "rng": rng,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["recipe"] != self.recipe.to_dict():
            raise UserError("checkpoint was made with a different recipe; start a new run")
        self.method.load_state_dict(state["method"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_as_python_rng_state(state["rng"]["python"]))
        if self.cuda and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])


def _as_python_rng_state(state):
    # random.setstate wants tuples; a round trip through torch.save keeps them, JSON would not.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
