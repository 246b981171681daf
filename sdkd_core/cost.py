"""What a network costs to run: parameters, multiply-accumulates per image, and CPU latency and
throughput measured on this machine.

MACs come from torch's own `FlopCounterMode` (FLOPs of every matmul and convolution, halved:
one multiply-accumulate is two FLOPs); element-wise work (BatchNorm, ReLU, pooling) is not
counted, as ptflops, thop and the papers' tables do not count it either.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Cost:
    params: int  # trainable and frozen parameters
    macs: int  # multiply-accumulates for one image
    latency_ms: float  # median wall time of one image (batch 1), this machine's CPU
    throughput: float  # images per second at batch `batch`, this machine's CPU
    batch: int
    threads: int  # torch's CPU threads during the measurement

    def row(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of `example` (one image: [1, C, H, W])."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    return counter.get_total_flops() // 2


def _median_seconds(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: allocations and kernels chosen once
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: nn.Module, shape: tuple[int, int, int], batch: int = 64,
            repeats: int = 20, budget_s: float = 20.0) -> Cost:
    """The cost of `model` (eval mode, on the CPU) for images of `shape` (C, H, W): repeats
    shrink so that the timing takes about `budget_s` at most."""
    model = model.eval().cpu()
    one = torch.randn(1, *shape)
    many = torch.randn(batch, *shape)
    first = _median_seconds(model, many, 1)
    repeats_many = max(3, min(repeats, int(budget_s / 2 / max(first, 1e-6))))
    latency = _median_seconds(model, one, max(repeats, 10))
    per_batch = _median_seconds(model, many, repeats_many)
    return Cost(params=count_params(model), macs=count_macs(model, one),
                latency_ms=1000.0 * latency, throughput=batch / per_batch, batch=batch,
                threads=torch.get_num_threads())
