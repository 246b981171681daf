"""What a sweep will cost, before anything runs: floating-point work counted on one image.

Per trained image a trial does the student's forward and backward (about 3x a forward), the
frozen teacher's forward, and the method's extra heads (a peer for DML, the proxy pass for
SDKD, ...) measured by running the method's own training step under `FlopCounterMode`.
Converting work to hours needs an effective throughput, which depends on the hardware far more
than on the model: the defaults are measured or stated in docs/benchmarks.md.
"""

from __future__ import annotations

import copy
from functools import cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from sdkd_core.datasets import DatasetInfo
from sdkd_core.distillers import build_distiller
from sdkd_core.distillers.vanilla import Vanilla
from sdkd_core.loader import example_inputs
from sdkd_core.models import build_model
from study.runfolder.trials import PlannedTrial

# Effective training throughput, FLOP/s. CPU: measured on this project's 2-core machine
# (docs/benchmarks.md). GPU: a conservative figure for small CIFAR CNNs on one modern GPU;
# override with --gpu-tflops after a first measured run.
CPU_GFLOPS_PER_CORE = 50.0
GPU_TFLOPS = 10.0


def shapes_only(info: DatasetInfo, count):
    """`count()` on the meta device (shapes without data) for ImageNet-sized images, whose CPU
    passes and weight initialisations take seconds a plan does not need; on the CPU for small
    images, or where a method's step reads values (`.item()`, a memory bank's sampling)."""
    if info.image_size > 64:
        try:
            with torch.device("meta"):
                return count()
        except (RuntimeError, NotImplementedError):
            pass
    return count()


def fresh_model(arch: str, info: DatasetInfo) -> torch.nn.Module:
    """A copy of one model built once per architecture and device: a plan counts many steps
    of the same few models, and copying weights is far cheaper than initialising them."""
    return copy.deepcopy(_built(arch, info.num_classes, info.in_channels,
                                str(torch.get_default_device())))


@cache
def _built(arch: str, num_classes: int, in_channels: int, device: str) -> torch.nn.Module:
    return build_model(arch, num_classes, in_channels)


@cache
def step_flops(method: str, teacher: str, student: str, info: DatasetInfo,
               params: tuple = (), n_train: int = 2) -> float:
    """FLOPs of one training step on one image (forward and backward, teacher included), the
    method bound to `n_train` training images (a memory bank's size counts)."""
    return shapes_only(info, lambda: _step_flops(method, teacher, student, info, params,
                                                 n_train))


def _step_flops(method: str, teacher: str, student: str, info: DatasetInfo, params: tuple,
                n_train: int) -> float:
    torch.manual_seed(0)
    s, t = fresh_model(student, info), fresh_model(teacher, info)
    distiller = build_distiller(method, s, t, dict(params), task=info.task)
    distiller.begin_epoch(10**6, 10**6 + 1, 1)  # late in training: every term is on
    labels = distiller.task.example_targets(max(n_train, 2), info.view_shape, info.num_classes)
    distiller.bind_data(labels)
    index = torch.arange(2)
    x, y = torch.randn(2, info.in_channels, *info.view_shape), labels[index]
    given = example_inputs(x, index)
    with FlopCounterMode(display=False) as counter:
        _, losses = distiller(x, y, 10**6, **{k: given[k] for k in distiller.batch_inputs})
        sum(losses.values()).backward()
    return counter.get_total_flops() / 2


@cache
def eval_flops(student: str, info: DatasetInfo) -> float:
    return shapes_only(info, lambda: _eval_flops(student, info))


def _eval_flops(student: str, info: DatasetInfo) -> float:
    model = fresh_model(student, info).eval()
    x = torch.randn(1, info.in_channels, *info.view_shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def trial_flops(trial: PlannedTrial, info: DatasetInfo, n_train: int, n_test: int,
                epochs: int) -> float:
    params = tuple(sorted(trial.params.items()))
    per_epoch = (n_train * step_flops(trial.method, trial.teacher, trial.student, info,
                                      params, n_train)
                 + n_test * eval_flops(trial.student, info))
    return epochs * per_epoch


def teacher_flops(arch: str, info: DatasetInfo, n_train: int, n_test: int, epochs: int) -> float:
    # A teacher trains as a vanilla student of its own architecture.
    return trial_flops(PlannedTrial(Vanilla.name, arch, arch), info, n_train, n_test, epochs)
