"""SDKD's proxy teacher keeps BatchNorm running statistics of its own.

The proxy runs the student's later stages, with the student's weights, on the Feature Fusion
Block's output. In training it normalises with batch statistics, as the student does; the
student's running statistics describe the student's own stage maps, not the FFB's output, so a
proxy evaluated with them scores far below what it learnt. `ProxyStatistics` holds the running
statistics of the layers the proxy runs, apart from the student's, and its training passes update
them (with each layer's own momentum) while the student's stay exactly as the student's passes
left them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sdkd_core.models import StagedNet

KEYS = ("running_mean", "running_var", "num_batches_tracked")


class _RunningStats(nn.Module):
    """One BatchNorm layer's running statistics, held apart from the layer."""

    def __init__(self, bn: _BatchNorm):
        super().__init__()
        for key in KEYS:
            self.register_buffer(key, getattr(bn, key).detach().clone())


class ProxyStatistics(nn.Module):
    """Running statistics for the BatchNorm layers of `body`'s stages `first`.. and of the
    modules it runs after them (its `closing`; a dense model's head): those that
    `body.forward_from(first, h)` runs, starting as copies of the body's; none without a body.

    Registered in the method, they are buffers like any other to checkpoints and to DDP's buffer
    broadcast; SyncBatchNorm conversion replaces the layers, not these, and keeps the layers'
    buffer names. `by_name` gives them under the body's buffer names: substituted for the body's
    in `torch.func.functional_call`, training-mode BatchNorm updates them in place and eval-mode
    BatchNorm normalises with them.
    """

    def __init__(self, body: StagedNet | None = None, first: int = 0):
        super().__init__()
        # A stage's buffer names start with its path in the body's module tree: `stages.k` for
        # most, torchvision's `layerK` for the ImageNet ResNets (whose `stages` is a view).
        paths = {} if body is None else {m: name for name, m in body.named_modules()}
        parts = [] if body is None else [
            *((paths[body.stages[k]], body.stages[k]) for k in range(first, body.num_stages)),
            *body.modules_after_stages().items()]
        found = [(f"{prefix}.{name}".rstrip("."), m) for prefix, part in parts
                 for name, m in part.named_modules()
                 if isinstance(m, _BatchNorm) and m.track_running_stats]
        self.names = [name for name, _ in found]
        self.layers = nn.ModuleList(_RunningStats(m) for _, m in found)

    def by_name(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """{`prefix` + the body's buffer name: the proxy's tensor itself, not a copy}."""
        return {f"{prefix}{name}.{key}": getattr(layer, key)
                for name, layer in zip(self.names, self.layers, strict=True) for key in KEYS}

    @torch.no_grad()
    def copy_into(self, body: StagedNet) -> None:
        """Give `body`'s layers these statistics (meant for a copy of the body)."""
        for name, value in self.by_name().items():
            body.get_buffer(name).copy_(value)

