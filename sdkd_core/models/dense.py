"""Dense-prediction models: a zoo backbone with its classifier dropped and a head that maps the
last backbone map to a per-pixel output at the input's resolution.

`DenseNet` keeps StagedNet's contract, so the feature methods and SDKD's proxy (which runs the
student's own later stages and head from a fused map, `forward_from`) work unchanged:

- `logits`: (N, out_channels, H, W) at the input's resolution, the head's map upsampled
  bilinearly with align_corners=False (as torchvision's DeepLabV3);
- `feats`: the backbone's maps, stem first; `preact_feats` as the backbone defines them;
- `pooled`: the global average of the last backbone map (after the backbone's `closing`, as a
  classifier would pool it), (N, C).

`forward_from(i, h)` must know the input's size without the input: `feat_strides[i]` (input
side / feats[i] side, found once at construction by a shape-only pass on the meta device) gives
it as h's size times that stride. That holds only when the input's sides are multiples of the
backbone's total stride (`output_stride`), so `forward` refuses other sizes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from sdkd_core.errors import UserError
from sdkd_core.models.base import ModelOutput, StagedNet

# A side every zoo backbone's strides divide; shapes only, so its size costs nothing.
_PROBE_SIDE = 1024


class _Trunk(nn.Module):
    """The backbone's stem and stages as one module, for a functional_call of the shape probe."""

    def __init__(self, net: StagedNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.net.run_stages(0, self.net.stem(x))[0]


def feature_strides(backbone: StagedNet) -> tuple[int, ...]:
    """Input side / side of each of the backbone's maps (stem first), from a meta-device pass:
    no arithmetic, no change to the backbone's weights or statistics."""
    trunk = _Trunk(backbone)
    state = {name: torch.empty_like(t, device="meta")
             for name, t in [*trunk.named_parameters(), *trunk.named_buffers()]}
    x = torch.empty(1, backbone.in_channels, _PROBE_SIDE, _PROBE_SIDE, device="meta")
    with torch.no_grad():
        feats = functional_call(trunk, state, (x,))
    strides = []
    for k, f in enumerate(feats):
        side_h, side_w = f.shape[-2:]
        if side_h != side_w or _PROBE_SIDE % side_h:
            raise ValueError(f"{backbone.name}: feats[{k}] is {side_h}x{side_w} for a "
                             f"{_PROBE_SIDE}-pixel input; no whole stride fits it")
        strides.append(_PROBE_SIDE // side_h)
    return tuple(strides)


def drop_classifier(backbone: StagedNet) -> StagedNet:
    """The backbone without its classifier module (under whatever name it is registered)."""
    head = backbone.classifier
    name = next(n for n, m in backbone._modules.items() if m is head)
    delattr(backbone, name)
    return backbone


class DenseNet(StagedNet):
    """A StagedNet whose logits are a map at the input's resolution.

    Subclasses register their head (its name is theirs: torchvision's `classifier` for
    DeepLabV3) and return it from `head`; the head maps the backbone's closed last map to
    `num_classes` channels at any resolution. The backbone is registered as `backbone`; `stem`
    and `stages` are its own, so hooks and the SDKD proxy see the backbone's modules.
    Input sides must be multiples of `output_stride`.
    """

    def __init__(self, name: str, backbone: StagedNet) -> None:
        super().__init__(name)
        self.backbone = drop_classifier(backbone)
        self._stage_channels = tuple(backbone.stage_channels)
        self.feat_strides = feature_strides(self.backbone)

    @property
    def head(self) -> nn.Module:
        raise NotImplementedError

    @property
    def stem(self) -> nn.Module:  # type: ignore[override]
        return self.backbone.stem

    @property
    def stages(self) -> nn.ModuleList:  # type: ignore[override]
        return self.backbone.stages

    @property
    def output_stride(self) -> int:
        """Input side / side of the smallest backbone map."""
        return max(self.feat_strides)

    @property
    def num_classes(self) -> int:
        """Output channels: classes for segmentation, 1 for depth."""
        return [m for m in self.head.modules() if isinstance(m, nn.Conv2d)][-1].out_channels

    def closing_map(self, h: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        return self.backbone.closing_map(h, taps)

    def modules_after_stages(self) -> dict[str, nn.Module]:
        paths = {m: name for name, m in self.named_modules()}
        after = {f"backbone.{k}": m for k, m in self.backbone.modules_after_stages().items()}
        return {**after, paths[self.head]: self.head}

    def forward(self, x: Tensor, preact: bool = False) -> ModelOutput:
        stride = self.output_stride
        if x.shape[-2] % stride or x.shape[-1] % stride:
            raise ValueError(
                f"{self.name}: input sides must be multiples of {stride} (the backbone's total "
                f"stride), got {x.shape[-2]}x{x.shape[-1]}; pad or crop the input")
        return self.forward_from(0, self.stem(x), preact)

    def forward_from(self, i: int, h: Tensor, preact: bool = False) -> ModelOutput:
        """Run stages i+1..N and the head on `h`, a map shaped like feats[i]; the logits come
        at h's size times `feat_strides[i]`, the input's size for the map forward made."""
        self.check_stage_index(i)
        size = (h.shape[-2] * self.feat_strides[i], h.shape[-1] * self.feat_strides[i])
        feats, preacts, closed = self.backbone.run_stages(i, h, preact)
        pooled = F.adaptive_avg_pool2d(closed, 1).flatten(1)
        out = self.head(closed)
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return ModelOutput(logits=out, feats=feats, pooled=pooled, preact_feats=preacts)


def load_dense_state(model: DenseNet, state_dict: Mapping[str, Tensor]) -> DenseNet:
    """Load a state dict under the model's own names (torchvision's, for the DeepLabV3-ResNets)
    strictly, less any `aux_classifier.*` (torchvision's training-only auxiliary head); a
    UserError in one line when it does not fit."""
    state = {k: v for k, v in state_dict.items() if not k.startswith("aux_classifier.")}
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise UserError(f"not a {model.name} state dict for {model.num_classes} output channels "
                        f"and {model.in_channels} input channels: {problem}")
    model.load_state_dict(state, strict=True)
    return model


def state_mismatch(own: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str:
    """What keeps `given` from loading strictly into a model whose state dict is `own`, or ''."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    reshaped = [k for k in given if k in own and given[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) such as {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) such as {unexpected[0]}")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} key(s) of another shape such as {k} "
                     f"{list(given[k].shape)}, the model's {list(own[k].shape)}")
    return "; ".join(parts)
