"""Shape, feature-tap, size and gradient checks for every model in the zoo."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sdkd_core.models import (
    CLASSIFICATION_MODEL_NAMES,
    ModelOutput,
    StagedNet,
    UnknownModelError,
    build_model,
)
from sdkd_core.models.mobilenetv2 import MobileNetV2
from sdkd_core.models.wrn import WideResNet

# (in_channels, side, num_classes): a MNIST-like and a CIFAR-100-like setting.
INPUTS = [(1, 28, 10), (3, 32, 100)]

# Reference sizes (millions of parameters at 100 classes) from the KD literature.
EXPECTED_PARAMS = {
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_40_2": 2.25,
    "resnet56": 0.86,
    "resnet20": 0.278,
    "vgg8": 3.96,
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", CLASSIFICATION_MODEL_NAMES)
@pytest.mark.parametrize(("in_channels", "side", "num_classes"), INPUTS)
def test_forward_taps_and_resume(name: str, in_channels: int, side: int, num_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes, in_channels).eval()
    assert isinstance(model, StagedNet)
    x = torch.randn(2, in_channels, side, side)
    with torch.no_grad():
        out = model(x, preact=True)
        plain = model(x)  # without the taps: the same pass, the closing ReLUs in place
        assert plain.preact_feats is None and torch.equal(plain.logits, out.logits)
        assert all(torch.equal(a, b) for a, b in zip(plain.feats, out.feats, strict=True))
        assert isinstance(out, ModelOutput)
        assert out.logits.shape == (2, num_classes)
        assert len(out.feats) == model.num_stages + 1
        assert [f.shape[1] for f in out.feats] == model.stage_channels
        assert out.pooled.shape == (2, model.stage_channels[-1])
        # Resuming from any tap must reproduce the full pass bit for bit.
        for i, feat in enumerate(out.feats):
            resumed = model.forward_from(i, feat, preact=True)
            assert torch.equal(model.forward_from(i, feat).logits, out.logits)
            assert len(resumed.feats) == model.num_stages + 1 - i
            assert resumed.feats[0] is feat
            assert torch.equal(resumed.logits, out.logits)
            assert torch.equal(resumed.feats[-1], out.feats[-1])
            # The map a pass starts from is its own pre-activation; the later ones are the same.
            assert resumed.preact_feats[0] is feat
            assert all(torch.equal(a, b) for a, b in
                       zip(resumed.preact_feats[1:], out.preact_feats[i + 1:], strict=True))


def opening_bn(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """What `bn` makes of x in its current mode, without moving its statistics."""
    stats = (None, None) if bn.training else (bn.running_mean, bn.running_var)
    return F.batch_norm(x, *stats, bn.weight, bn.bias, bn.training, 0.0, bn.eps)


@pytest.mark.parametrize("name", CLASSIFICATION_MODEL_NAMES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_preact_taps_are_each_stage_before_its_closing_activation(name: str, mode: str) -> None:
    """mdistiller's `preact_feats`: ReLU-closed maps before the ReLU; WRN's after the BN that
    opens the next stage (the closing BN for the last); maps without a closing activation (the
    stem, MobileNetV2's linear bottlenecks) are their own."""
    torch.manual_seed(0)
    model = build_model(name, 10).train(mode == "train")
    before = set(vars(model))
    out = model(torch.randn(3, 3, 32, 32), preact=True)
    assert set(vars(model)) == before  # pure: nothing stashed on the module
    feats, pre = out.feats, out.preact_feats
    assert len(pre) == len(feats) and pre[0] is feats[0]
    assert [p.shape for p in pre] == [f.shape for f in feats]
    n = model.num_stages
    if isinstance(model, WideResNet):
        # feats[-1] is the pre-BN map (mdistiller's f3); the closing BN gives its f3_pre.
        opening = [model.stages[k][0].bn1 for k in range(1, n)] + [model.closing[0]]
        for k, bn in enumerate(opening, start=1):
            torch.testing.assert_close(pre[k], opening_bn(bn, feats[k]), rtol=0, atol=0)
        torch.testing.assert_close(out.pooled, F.relu(pre[n]).mean((2, 3)))
        closed = []
    elif isinstance(model, MobileNetV2):
        assert all(pre[k] is feats[k] for k in range(1, n))
        closed = [n]
    else:
        closed = list(range(1, n + 1))
    for k in closed:
        assert torch.equal(F.relu(pre[k]), feats[k]), k
        assert pre[k].min() < 0, k  # a real pre-activation, not the map again
    # Nothing downstream overwrote a tap in place: autograd can go back through all of them.
    if mode == "train":
        sum(p.sum() for p in pre[1:]).backward()


@pytest.mark.parametrize("name", CLASSIFICATION_MODEL_NAMES)
def test_a_hook_on_the_last_stage_sees_the_last_map(name: str) -> None:
    """Grad-CAM hooks `stages[-1]`: the taps must not bypass the stage module."""
    model = build_model(name, 10).eval()
    seen = []
    hook = model.stages[-1].register_forward_hook(lambda _m, _i, output: seen.append(output))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    hook.remove()
    assert len(seen) == 1 and torch.equal(seen[0], out.feats[-1])


def test_model_output_still_builds_from_three_fields() -> None:
    logits, feats, pooled = torch.zeros(1, 2), [torch.zeros(1, 1, 1, 1)], torch.zeros(1, 1)
    out = ModelOutput(logits, feats, pooled)
    assert out.preact_feats is None and out.pooled is pooled


@pytest.mark.parametrize(("name", "millions"), sorted(EXPECTED_PARAMS.items()))
def test_parameter_count(name: str, millions: float) -> None:
    count = count_params(build_model(name, 100))
    assert abs(count - millions * 1e6) <= 0.03 * millions * 1e6, count


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(UnknownModelError, match="did you mean 'resnet20'") as info:
        build_model("resnet21", 10)
    message = str(info.value)
    assert "\n" not in message and "resnet110" in message
    assert isinstance(info.value, ValueError)


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(UnknownModelError) as info:
        build_model("transformer", 10)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(("num_classes", "in_channels"), [(1, 3), (10, 0)])
def test_bad_sizes_rejected(num_classes: int, in_channels: int) -> None:
    with pytest.raises(ValueError, match=">= "):
        build_model("resnet8", num_classes, in_channels)


def test_forward_from_rejects_bad_index() -> None:
    model = build_model("resnet8", 10)
    h = torch.zeros(1, 16, 8, 8)
    for bad in (-1, model.num_stages + 1):
        with pytest.raises(ValueError, match="stage index"):
            model.forward_from(bad, h)


@pytest.mark.parametrize("name", CLASSIFICATION_MODEL_NAMES)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 10).train()
    model(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_functional_call_matches_module() -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    out = torch.func.functional_call(model, state, (x,), {"preact": True})
    direct = model(x, preact=True)
    assert torch.equal(out.logits, direct.logits)
    assert all(torch.equal(a, b) for a, b in zip(out.preact_feats, direct.preact_feats,
                                                      strict=True))


class _ToyNet(StagedNet):
    """A subclass that only assigns the modules, as third-party models may do."""

    def __init__(self) -> None:
        super().__init__("toy")
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.BatchNorm2d(6))])
        self.classifier = nn.Linear(6, 5)


def test_plain_subclass_infers_channels() -> None:
    model = _ToyNet().eval()
    assert model.stage_channels == [4, 6] and model.num_stages == 1
    out = model(torch.randn(2, 3, 8, 8), preact=True)
    assert out.logits.shape == (2, 5) and out.feats[-1].shape == (2, 6, 4, 4)
    assert torch.equal(model.forward_from(1, out.feats[1]).logits, out.logits)
    assert all(p is f for p, f in zip(out.preact_feats, out.feats, strict=True))
