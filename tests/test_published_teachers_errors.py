"""Checkpoint formats load_teacher_checkpoint accepts besides RepDistiller's plain one, and
the one-line errors for files that do not fit (see test_published_teachers.py for logits)."""

from __future__ import annotations

import argparse

import pytest
import torch
from test_published_teachers import reference

from sdkd_core.errors import UserError
from sdkd_core.models import build_model
from sdkd_core.models.published import load_teacher_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # batch-2 convolutions


def logits(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = net(x)
    return out.logits if hasattr(out, "logits") else out


def test_project_checkpoint_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1)
    for name, buf in model.named_buffers():
        if "running" in name:
            buf.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "teacher.pt")
    loaded = load_teacher_checkpoint(tmp_path / "teacher.pt", "resnet8", 10, 1)
    assert loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(logits(loaded, x), logits(model.eval(), x))


def test_dataparallel_prefix_and_missing_batch_counters_load(tmp_path):
    net = reference("resnet8", 10)
    state = {f"module.{k}": v for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # as PyTorch < 0.4.1 saved BN
    torch.save({"model": state}, tmp_path / "dp.pth")
    model = load_teacher_checkpoint(str(tmp_path / "dp.pth"), "resnet8", 10, 3)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(logits(model, x), logits(net, x), rtol=1e-5, atol=1e-5)


def save(path, obj):
    torch.save(obj, path)
    return path


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def ref_state(arch, num_classes):
    return {"model": reference(arch, num_classes).state_dict()}


CASES = {
    "deeper resnet": (
        lambda p: save(p, ref_state("resnet56", 100)), "resnet20", 100, 3,
        ["not a resnet20 checkpoint for 100 classes and 3 input channels",
         "unexpected key(s) such as layer1.3.conv1.weight",
         "it is a resnet56 checkpoint for 100 classes"]),
    "shallower resnet": (
        lambda p: save(p, ref_state("resnet20", 100)), "resnet56", 100, 3,
        ["missing key(s) such as layer1.3.conv1.weight"]),
    "more classes": (
        lambda p: save(p, ref_state("resnet20", 100)), "resnet20", 10, 3,
        ["fc.weight has shape [100, 64], resnet20 needs [10, 64]",
         "it is a resnet20 checkpoint for 100 classes and 3 input channels: give a resnet20 one"
         ]),
    "grey input": (
        lambda p: save(p, ref_state("resnet8", 10)), "resnet8", 10, 1,
        ["conv1.weight has shape [16, 3, 3, 3], resnet8 needs [16, 1, 3, 3]"]),
    "other family": (
        lambda p: save(p, ref_state("wrn_16_2", 10)), "resnet8", 10, 3,
        ["unexpected key(s) such as block1.layer.0.bn1.weight", "it is a wrn_16_2 checkpoint"]),
    "random dict": (
        lambda p: save(p, {"foo": torch.randn(3), "bar": torch.zeros(2)}), "resnet8", 10, 3,
        ["2 unexpected key(s) such as foo", "missing key(s) such as conv1.weight",
         "give the checkpoint of that architecture"]),
    "project names, wrong arch": (
        lambda p: save(p, build_model("resnet8x4", 10).state_dict()), "resnet8", 10, 3,
        ["(this project's names)", "unexpected key(s) such as stages.0.0.shortcut.0.weight",
         "it is a resnet8x4 checkpoint for 10 classes"]),
    "project names, more classes": (
        lambda p: save(p, build_model("vgg8", 100).state_dict()), "vgg8", 10, 3,
        ["classifier.weight has shape [100, 512], vgg8 needs [10, 512]"]),
    "not torch": (
        lambda p: write(p, b"a text file\n"), "resnet8", 10, 3,
        ["cannot be read by torch.load", "give a resnet8 checkpoint written by torch.save"]),
    "empty file": (
        lambda p: write(p, b""), "resnet8", 10, 3, ["cannot be read by torch.load (EOFError)"]),
    "pickled object": (
        lambda p: save(p, {"model": {}, "opt": argparse.Namespace(lr=0.05)}), "resnet8", 10, 3,
        ["holds argparse.Namespace objects that weights-only loading refuses"]),
    "a list": (
        lambda p: save(p, [torch.zeros(1)]), "resnet8", 10, 3,
        ["holds a list, not a dict of tensors"]),
    "empty dict": (lambda p: save(p, {}), "resnet8", 10, 3, ["holds an empty dict"]),
    "not tensors": (
        lambda p: save(p, {"model": {"conv1.weight": 3}}), "resnet8", 10, 3,
        ["not a dict of tensors: 'conv1.weight' holds a int"]),
    "missing file": (lambda p: p, "resnet8", 10, 3, ["no such file"]),
    "a folder": (lambda p: p.mkdir() or p, "resnet8", 10, 3, ["not a file"]),
    "unknown arch": (
        lambda p: save(p, ref_state("resnet8", 10)), "resnet9", 10, 3,
        ["unknown model 'resnet9'"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_checkpoint_is_a_one_line_user_error(tmp_path, case):
    make, arch, num_classes, in_channels, fragments = CASES[case]
    path = make(tmp_path / "teacher.pth")
    with pytest.raises(UserError) as err:
        load_teacher_checkpoint(path, arch, num_classes, in_channels)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message
