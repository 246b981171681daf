"""Load published teachers into the zoo: CIFAR ones (CRD/RepDistiller's, also shipped by
mdistiller), torchvision's ImageNet ResNets and mdistiller's ImageNet MobileNetV1.

RepDistiller (HobbitLong/RepDistiller, models/) saves `{'model': state_dict, ...}` from its own
classes; ours compute the same function on 32x32 inputs under other module names. Each family
gets an explicit rule from our parameter names to RepDistiller's, so a checkpoint of another
depth, width or class count fails on a name or a shape instead of loading shifted weights.
The ImageNet ResNets' names are torchvision's own (a plain state dict, e.g. torchvision's
downloaded `.pth` files); MobileNetV1's map onto mdistiller's `model.N.M` / `fc`. A dense
model's checkpoint is read under its own names (torchvision's DeepLabV3 files included).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from sdkd_core.errors import UserError
from sdkd_core.models.base import StagedNet
from sdkd_core.models.dense import DenseNet, load_dense_state
from sdkd_core.models.imagenet_resnet import ImageNetResNet
from sdkd_core.models.mobilenetv1 import STAGES as V1_STAGES
from sdkd_core.models.mobilenetv1 import MobileNetV1
from sdkd_core.models.mobilenetv2 import SETTINGS, STAGE_ROWS, MobileNetV2
from sdkd_core.models.registry import CLASSIFICATION_MODEL_NAMES, build_model
from sdkd_core.models.resnet import CifarResNet
from sdkd_core.models.shufflenetv2 import ShuffleV2
from sdkd_core.models.vgg import POOLED_BLOCKS, VGG
from sdkd_core.models.wrn import WideResNet

# A rule maps one of our module paths (a state_dict key less its last part) to RepDistiller's;
# None means the rule has no name for it, which is a bug in the table, not in the checkpoint.
Rule = Callable[[str], str | None]

# resnet.py BasicBlock: conv1 bn1 relu conv2 bn2 (+ downsample) -- ours: body = conv_bn x 2.
_RESNET_BLOCK = {"body.0": "conv1", "body.1": "bn1", "body.3": "conv2", "body.4": "bn2",
                 "shortcut.0": "downsample.0", "shortcut.1": "downsample.1"}
# ShuffleNetv2.py DownBlock: left = conv1 bn1 conv2 bn2, right = conv3 bn3 conv4 bn4 conv5 bn5.
_SHUFFLE_DOWN = {"left.0": "conv1", "left.1": "bn1", "left.2": "conv2", "left.3": "bn2",
                 "right.0": "conv3", "right.1": "bn3", "right.3": "conv4", "right.4": "bn4",
                 "right.5": "conv5", "right.6": "bn5"}
# ShuffleNetv2.py BasicBlock: conv1 bn1 conv2 bn2 conv3 bn3 on the split-off half.
_SHUFFLE_UNIT = {"right.0": "conv1", "right.1": "bn1", "right.3": "conv2", "right.4": "bn2",
                 "right.5": "conv3", "right.6": "bn3"}


def _resnet_rule(path: str) -> str | None:
    if m := re.fullmatch(r"stages\.(\d+)\.(\d+)\.(\w+\.\d+)", path):
        s, b, part = m.groups()
        return f"layer{int(s) + 1}.{b}.{_RESNET_BLOCK[part]}" if part in _RESNET_BLOCK else None
    return {"stem.0": "conv1", "stem.1": "bn1", "classifier": "fc"}.get(path)


def _wrn_rule(path: str) -> str | None:
    if m := re.fullmatch(r"stages\.(\d+)\.(\d+)\.(bn1|conv1|bn2|conv2|projection)", path):
        s, b, part = m.groups()
        part = "convShortcut" if part == "projection" else part
        return f"block{int(s) + 1}.layer.{b}.{part}"
    return {"stem": "conv1", "closing.0": "bn1", "classifier": "fc"}.get(path)


def _vgg_rule(path: str) -> str | None:
    # blockK keeps its conv/BN/ReLU indices; our stages 1..3 start with the max-pool that
    # RepDistiller keeps outside as poolK-1, shifting their indices by one.
    if m := re.fullmatch(r"stem\.(\d+)", path):
        return f"block0.{m[1]}"
    if m := re.fullmatch(r"stages\.(\d+)\.(\d+)", path):
        k, j = int(m[1]) + 1, int(m[2])
        return f"block{k}.{j - 1 if k <= POOLED_BLOCKS else j}"
    return {"classifier": "classifier"}.get(path)


def _mobilenet_places() -> dict[tuple[int, int], tuple[int, int]]:
    """(our stage, block) -> (RepDistiller's `blocks` row, block), from the shared SETTINGS."""
    places = {}
    for s, rows in enumerate(STAGE_ROWS):
        b = 0
        for row in rows:
            for i in range(SETTINGS[row][2]):
                places[s, b] = (row, i)
                b += 1
    return places


_MOBILENET_PLACES = _mobilenet_places()
# Our last stage appends conv2 (conv, BN, ReLU) after its inverted residuals.
_MOBILENET_HEAD = sum(SETTINGS[row][2] for row in STAGE_ROWS[-1])


def _mobilenet_rule(path: str) -> str | None:
    if m := re.fullmatch(r"stages\.(\d+)\.(\d+)\.body\.(\d+)", path):
        place = _MOBILENET_PLACES.get((int(m[1]), int(m[2])))
        return f"blocks.{place[0]}.{place[1]}.conv.{m[3]}" if place else None
    if m := re.fullmatch(rf"stages\.{len(STAGE_ROWS) - 1}\.(\d+)", path):
        return f"conv2.{int(m[1]) - _MOBILENET_HEAD}"
    return {"stem.0": "conv1.0", "stem.1": "conv1.1", "classifier": "classifier.0"}.get(path)


def _shuffle_rule(path: str) -> str | None:
    if m := re.fullmatch(r"stages\.(\d+)\.(\d+)\.(\w+\.\d+)", path):
        s, b, part = m.groups()
        table = _SHUFFLE_DOWN if b == "0" else _SHUFFLE_UNIT
        return f"layer{int(s) + 1}.{b}.{table[part]}" if part in table else None
    # The head conv2/bn2 follow the last stage's down block and units in our Sequential.
    head = 1 + ShuffleV2.NUM_BLOCKS[-1]
    if m := re.fullmatch(rf"stages\.{len(ShuffleV2.NUM_BLOCKS) - 1}\.(\d+)", path):
        return {head: "conv2", head + 1: "bn2"}.get(int(m[1]))
    return {"stem.0": "conv1", "stem.1": "bn1", "classifier": "linear"}.get(path)


def _mobilenetv1_rule(path: str) -> str | None:
    # mdistiller's `model` Sequential: the stem at 0, then the 13 conv_dw blocks in order.
    if m := re.fullmatch(r"stages\.(\d+)\.(\d+)\.(\d+)", path):
        s, b, i = map(int, m.groups())
        return f"model.{1 + sum(map(len, V1_STAGES[:s])) + b}.{i}"
    return {"stem.0": "model.0.0", "stem.1": "model.0.1", "classifier": "fc"}.get(path)


def _ours(path: str) -> str:
    return path


_RULES: dict[type[StagedNet], Rule] = {
    CifarResNet: _resnet_rule, WideResNet: _wrn_rule, VGG: _vgg_rule,
    MobileNetV2: _mobilenet_rule, ShuffleV2: _shuffle_rule,
    ImageNetResNet: _ours,  # its module names are torchvision's
    MobileNetV1: _mobilenetv1_rule,
}
# Whose names a family's published checkpoints use (RepDistiller's unless listed).
_SOURCES: dict[type[StagedNet], str] = {ImageNetResNet: "torchvision's",
                                        MobileNetV1: "mdistiller's"}


def _head_key(model: StagedNet) -> str:
    """Our state_dict key of the classifier's weight (`fc.weight` for torchvision's names)."""
    return next(f"{name}.weight" for name, m in model.named_modules() if m is model.classifier)


def _expected(model: StagedNet, repdistiller: bool) -> dict[str, tuple[str, torch.Size]]:
    """Checkpoint key -> (our key, shape) for every entry of the model's state_dict."""
    rule = _RULES[type(model)] if repdistiller else _ours
    out: dict[str, tuple[str, torch.Size]] = {}
    for key, value in model.state_dict().items():
        path, _, leaf = key.rpartition(".")
        theirs = rule(path)
        if theirs is None or f"{theirs}.{leaf}" in out:
            raise RuntimeError(f"{model.name}: no unique RepDistiller name for {key}")
        out[f"{theirs}.{leaf}"] = (key, value.shape)
    return out


def _optional(key: str) -> bool:
    # BN's batch counter only matters when training with momentum=None; checkpoints from
    # PyTorch < 0.4.1 lack it, so a missing one keeps the fresh model's value.
    return key.endswith(".num_batches_tracked")


def _shape(shape: torch.Size) -> str:
    return str(list(shape))


def _read(path: Path, arch: str) -> object:
    if not path.exists():
        raise UserError(f"{path}: no such file; give the path of a saved {arch} checkpoint")
    if not path.is_file():
        raise UserError(f"{path}: not a file; give the path of a saved {arch} checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses pickled code/objects (e.g. RepDistiller's *_last.pth keep 'opt',
        # an argparse.Namespace); loading those would run code from the file.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"{found[1]} objects" if found else "pickled Python objects"
        raise UserError(
            f"{path}: holds {what} that weights-only loading refuses, so it is not a plain "
            f"{arch} checkpoint; if you trust it, re-save just its weights with "
            "torch.save({'model': state_dict}, path)") from None
    except Exception as err:  # torch raises many types (RuntimeError, KeyError, EOFError...)
        lines = str(err).strip().splitlines()
        detail = f"{type(err).__name__}: {lines[0][:120]}" if lines else type(err).__name__
        raise UserError(
            f"{path}: cannot be read by torch.load ({detail}); give a "
            f"{arch} checkpoint written by torch.save") from None


def _state_dict(path: Path, arch: str, obj: object) -> dict[str, Tensor]:
    """The checkpoint's weights, unwrapped from {'model': ...} and DataParallel's 'module.'."""
    fix = f"give a state_dict or a {{'model': state_dict}} checkpoint of {arch}"
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        what = "an empty dict" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise UserError(f"{path}: holds {what}, not a dict of tensors; {fix}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise UserError(f"{path}: not a dict of tensors: {key!r} holds a "
                            f"{type(value).__name__}; {fix}")
    if all(key.startswith("module.") for key in obj):
        return {key.removeprefix("module."): value for key, value in obj.items()}
    return dict(obj)


def _key_mismatch(state: dict[str, Tensor], expected: dict[str, tuple[str, torch.Size]]) -> str:
    extra = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state and not _optional(k)]
    parts = [f"{len(extra)} unexpected key(s) such as {extra[0]}"] if extra else []
    if missing:
        parts.append(f"{len(missing)} missing key(s) such as {missing[0]}")
    return " and ".join(parts)


def _mismatch(
    state: dict[str, Tensor], expected: dict[str, tuple[str, torch.Size]], arch: str
) -> str:
    """What keeps `state` from filling `expected`, or '' when it fits exactly."""
    problem = _key_mismatch(state, expected)
    if problem:
        return problem
    for key, value in state.items():
        if value.shape != expected[key][1]:
            return f"{key} has shape {_shape(value.shape)}, {arch} needs {_shape(expected[key][1])}"
    return ""


def _guess(state: dict[str, Tensor], repdistiller: bool) -> str:
    """'a <arch> checkpoint for ...' when a zoo architecture fits the file's names and shapes."""
    for name in CLASSIFICATION_MODEL_NAMES:  # the dense models are not guessed
        with torch.device("meta"):  # names and shapes only: no memory, no init cost
            model = build_model(name, 10)
        expected = _expected(model, repdistiller)
        if _key_mismatch(state, expected):
            continue
        head_key = _head_key(model)
        head = next(k for k, (ours, _) in expected.items() if ours == head_key)
        stem = next(iter(expected))  # every zoo model's first weight is the stem conv's
        if state[head].dim() != 2 or state[stem].dim() != 4 or state[head].shape[0] < 2:
            continue
        classes, channels = state[head].shape[0], state[stem].shape[1]
        with torch.device("meta"):
            expected = _expected(build_model(name, classes, channels), repdistiller)
        if not _mismatch(state, expected, name):
            return f"a {name} checkpoint for {classes} classes and {channels} input channels"
    return ""


def _check_torchvision_head(path: Path, arch: str, state: dict[str, Tensor],
                            num_classes: int) -> None:
    """A torchvision ResNet checkpoint with the right layers but another class count (most
    often ImageNet's 1000 on a smaller dataset): one line saying both counts and what to do."""
    head = state.get("fc.weight")
    if head is None or head.dim() != 2 or head.shape[0] == num_classes:
        return
    classes = head.shape[0]
    where = " (imagenet)" if classes == 1000 else ""
    raise UserError(
        f"{path}: this {arch} checkpoint classifies {classes} classes (fc.weight "
        f"{_shape(head.shape)}) but the dataset has {num_classes}; use it as a teacher on a "
        f"{classes}-class dataset{where}, or give no checkpoint so that a {arch} teacher is "
        f"trained on this dataset (or give one fine-tuned to its {num_classes} classes)")


def load_teacher_checkpoint(
    path: str | os.PathLike[str], arch: str, num_classes: int, in_channels: int
) -> StagedNet:
    """Zoo model `arch` holding a checkpoint's weights, in eval mode and frozen.

    Reads this project's format (our model's plain state_dict, as study/teachers.py saves),
    RepDistiller/mdistiller's (`{'model': state_dict}` of their classes, 'module.' allowed) and,
    for resnet18/34/50, torchvision's plain state dict (its downloaded weights) as it is; a
    dense model's, under its own names (torchvision's DeepLabV3 files, less their auxiliary head).
    Every entry must match a weight of the model and fill it; anything else is a UserError
    whose one line names the file and the problem.
    """
    path = Path(path)
    try:
        model = build_model(arch, num_classes, in_channels)
    except UserError as err:
        raise type(err)(f"{path}: {err}") from None
    state = _state_dict(path, arch, _read(path, arch))
    if isinstance(model, DenseNet):  # its own names; torchvision's for the DeepLabV3-ResNets
        try:
            load_dense_state(model, state)
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
        return model.eval().requires_grad_(False)
    # Our module names never start a RepDistiller key: stems and stages are theirs conv1/layerK.
    ours = any(key.startswith(("stem.", "stages.")) for key in state)
    expected = _expected(model, not ours)
    problem = _mismatch(state, expected, arch)
    if problem:
        if isinstance(model, ImageNetResNet) and not _key_mismatch(state, expected):
            _check_torchvision_head(path, arch, state, num_classes)
        naming = "this project's" if ours else _SOURCES.get(type(model), "RepDistiller's")
        guess = _guess(state, not ours)
        fix = (f"it is {guess}: give a {arch} one, or use it where that fits" if guess
               else "give the checkpoint of that architecture")
        raise UserError(
            f"{path}: not a {arch} checkpoint for {num_classes} classes and {in_channels} "
            f"input channels ({naming} names): {problem}; {fix}")
    weights = dict(model.state_dict())
    weights.update({expected[key][0]: value for key, value in state.items()})
    model.load_state_dict(weights, strict=True)
    return model.eval().requires_grad_(False)
