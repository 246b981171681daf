"""What the engine needs from torch.distributed: the global batch split over ranks, sums over
ranks, and one set of buffers on every rank. Each is a no-op without a process group."""

from __future__ import annotations

import torch
from torch import distributed as dist
from torch import nn

from sdkd_core.errors import UserError


def split_batch(batch_size: int, workers: int, batch_name: str = "batch_size",
                workers_name: str = "world_size") -> int:
    """Each worker's share of the global `batch_size`; a UserError when it does not split.

    The recipe's batch is global so a recipe means the same on 1 or 8 workers: the same
    optimizer steps per epoch at the same learning rate.
    """
    if workers <= 1:
        return batch_size
    if batch_size % workers:
        lower = max(batch_size // workers, 2) * workers
        upper = (batch_size // workers + 1) * workers
        such_as = " or ".join(str(b) for b in sorted({lower, upper}))
        raise UserError(f"{batch_name}={batch_size} does not divide among {workers_name}="
                        f"{workers} workers; use a multiple of {workers} such as {such_as}")
    if batch_size // workers < 2:
        raise UserError(f"{batch_name}={batch_size} gives each of {workers_name}={workers} "
                        f"workers {batch_size // workers} image a step and BatchNorm needs at "
                        f"least 2; use {2 * workers} or more")
    return batch_size // workers


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    if distributed():
        dist.all_reduce(t)
    return t


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics, ...) to every rank.

    DDP sends them at the start of each forward, so after an epoch's last step every rank holds
    its own update; this makes all ranks evaluate the model that rank 0 checkpoints.
    """
    if distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
