"""Common shape of every zoo model: a stem, N stages and a linear head, with feature taps."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> list[nn.Module]:
    """Conv (no bias: BN follows) + BN, optionally + ReLU, as a list to splice into Sequentials."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return [*layers, nn.ReLU(inplace=True)] if relu else layers


class ModelOutput(NamedTuple):
    """What a forward pass returns; `feats[0]` is the stem output, `feats[-1]` the last stage.

    `preact_feats[i]` (filled when the pass is asked for it, `preact=True`; None otherwise) is
    feats[i] before the activation that closes it, as mdistiller's models define `preact_feats`:
    a ResNet stage's last block before its closing ReLU, a VGG block before its ReLU, a WRN
    stage's map after the BatchNorm that opens the next stage (the network's closing BN for the
    last). A map with no closing activation is its own, and so is the map a pass starts from
    (`feats[0]`; `h` of `forward_from`).
    Last and defaulted so that (logits, feats, pooled) still builds one.
    """

    logits: Tensor
    feats: list[Tensor]
    pooled: Tensor
    preact_feats: list[Tensor] | None = None


class Stage(nn.Sequential):
    """A stage that can report pre-activations into a `taps` dict while it runs (pure: the dict
    is the caller's). Its last module, if it takes taps, reports its output before the closing
    activation ("preact"); its first, the pre-activation of the stage's input as the stage
    computes it ("entry_preact": the BatchNorm that opens a WRN stage). Called without taps it is
    the plain Sequential; it stays the module called, so hooks on a stage keep firing."""

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        ends = (0, len(self) - 1) if taps is not None else ()
        for k, module in enumerate(self):
            x = module(x, taps) if k in ends and getattr(module, "takes_taps", False) else module(x)
        return x


class ClosingReLU(nn.ReLU):
    """The ReLU that closes a stage: with taps it keeps its input as the stage's "preact" (and
    so cannot work in place)."""

    takes_taps = True

    def __init__(self) -> None:
        super().__init__(inplace=True)

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        if taps is None:
            return super().forward(x)
        taps["preact"] = x
        return F.relu(x)


def _infer_out_channels(module: nn.Module) -> int:
    """Best-effort channels for subclasses that never declared theirs: the last conv/BN wins."""
    found: int | None = None
    for sub in module.modules():
        if isinstance(sub, nn.modules.conv._ConvNd):
            found = sub.out_channels
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            found = sub.num_features
    if found is None:
        raise ValueError(
            f"cannot infer output channels of {type(module).__name__}; "
            "call _finish(stage_channels) in the model constructor"
        )
    return found


class StagedNet(nn.Module):
    """Base for staged CNNs.

    Subclasses assign `self.stem`, `self.stages` (nn.ModuleList), `self.classifier` (nn.Linear)
    and `self.name`, then call `self._finish(stage_channels)` to record channels and init weights.
    Forward is pure (no attribute mutation) so it works under functional_call and DDP.
    """

    stem: nn.Module
    stages: nn.ModuleList
    classifier: nn.Linear

    def __init__(self, name: str = "") -> None:
        super().__init__()
        self.name = name
        self._stage_channels: tuple[int, ...] | None = None

    def _finish(self, stage_channels: list[int]) -> None:
        """Check the declared channels against the modules and initialise weights."""
        if len(stage_channels) != len(self.stages) + 1:
            raise ValueError(
                f"{self.name}: {len(stage_channels)} stage channels for "
                f"{len(self.stages)} stages plus stem"
            )
        if self.classifier.in_features != stage_channels[-1]:
            raise ValueError(
                f"{self.name}: classifier takes {self.classifier.in_features} "
                f"features but the last stage has {stage_channels[-1]} channels"
            )
        self._stage_channels = tuple(stage_channels)
        self.init_weights()

    def init_weights(self) -> None:
        """He init (fan_out) for convs, identity BN; Linear keeps torch's default init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def num_stages(self) -> int:
        """Number of stages, not counting the stem."""
        return len(self.stages)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    @property
    def in_channels(self) -> int:
        return next(m for m in self.stem.modules() if isinstance(m, nn.Conv2d)).in_channels

    @property
    def stage_channels(self) -> list[int]:
        """Channels of feats[0..N] (stem first)."""
        if self._stage_channels is not None:
            return list(self._stage_channels)
        return [_infer_out_channels(m) for m in (self.stem, *self.stages)]

    def closing_map(self, h: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        """The last stage's map through the model's `closing` module, if it has one: what it
        applies before pooling but the reference models keep out of their features (the
        WRN's closing BN+ReLU), so `feats[-1]` is the map those references return. A `Stage`
        closing reports its pre-activation into `taps` as a stage does."""
        closing = self._modules.get("closing")
        if closing is None:
            return h
        return closing(h, taps) if taps is not None and isinstance(closing, Stage) else closing(h)

    def modules_after_stages(self) -> dict[str, nn.Module]:
        """The modules with state that `forward_from` runs after the stages, by their path in
        the module tree: what must travel with the stages' state (SDKD's proxy statistics) for
        a pass from a stage to be the model's. Here the `closing` module, if there is one."""
        closing = self._modules.get("closing")
        return {} if closing is None else {"closing": closing}

    def forward(self, x: Tensor, preact: bool = False) -> ModelOutput:
        # Routing through forward_from keeps both paths bit-identical.
        return self.forward_from(0, self.stem(x), preact)

    def check_stage_index(self, i: int) -> None:
        """A ValueError unless `i` names a feature map (0 = the stem's .. N = the last stage's)."""
        n = len(self.stages)
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= n:
            raise ValueError(f"{self.name}: stage index must be an int in 0..{n}, got {i!r}")

    def forward_from(self, i: int, h: Tensor, preact: bool = False) -> ModelOutput:
        """Run stages i+1..N and the head on `h`, a map shaped like feats[i] (i == N: head only).

        `preact`: also return each map before its closing activation (`preact_feats`). Only a
        method that reads them asks: keeping them makes every closing ReLU run out of place."""
        self.check_stage_index(i)
        feats, preacts, closed = self.run_stages(i, h, preact)
        pooled = F.adaptive_avg_pool2d(closed, 1).flatten(1)
        return ModelOutput(logits=self.classifier(pooled), feats=feats, pooled=pooled,
                           preact_feats=preacts)

    def run_stages(self, i: int, h: Tensor, preact: bool = False
                   ) -> tuple[list[Tensor], list[Tensor] | None, Tensor]:
        """The body of `forward_from` without its head: (feats, preact_feats or None, the last
        map through `closing_map`, which the head reads)."""
        if not preact:
            feats = [h]
            for stage in self.stages[i:]:
                h = stage(h)
                feats.append(h)
            return feats, None, self.closing_map(h)
        n = len(self.stages)
        feats, preacts = [h], [h]
        for k, stage in enumerate(self.stages):
            if k >= i:
                taps: dict[str, Tensor] = {}
                h = stage(h, taps) if isinstance(stage, Stage) else stage(h)
                # The map the pass starts from stays its own pre-activation (the stem's, as
                # mdistiller's preact_feats[0]); later maps may get theirs from the next stage.
                if k > i and "entry_preact" in taps:
                    preacts[-1] = taps["entry_preact"]
                feats.append(h)
                preacts.append(taps.get("preact", h))
        closing_taps: dict[str, Tensor] = {}
        closed = self.closing_map(h, closing_taps)
        # The closing's pre-activation (the WRN's BN output) is the last map's, as an opening BN
        # is for the maps before it; the map the pass starts from stays its own.
        if n > i and "preact" in closing_taps:
            preacts[-1] = closing_taps["preact"]
        return feats, preacts, closed
