"""DIST side by side with its reference: the same logits, weights and images through the
project's `dist` and through hunto/image_classification_sota's own code (the classification
submodule of hunto/DIST_KD): `lib/models/losses/dist_kd.py` (the loss) and `kd_loss.py`
(`KDLoss`, which hooks the networks and weighs CE and DIST as `configs/strategies/distill/
dist_cifar.yaml` sets: kd dist_t4, ori_loss_weight 1, kd_loss_weight 2).

    git -C <mirror of hunto/image_classification_sota> archive HEAD | tar -x -C /tmp/ref-dist
    python benchmarks/reference_check/dist.py --reference /tmp/ref-dist

Prints, per loss term, the largest absolute and relative difference, and the largest difference
of the gradients (w.r.t. the student's logits, then the student's weights). CPU, float32.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
import types
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_check.differences import grad_diff, logit_grad, row  # noqa: E402
from sdkd_core.distillers import build_distiller  # noqa: E402 (after the path is set)
from sdkd_core.distillers.dist import dist_relations  # noqa: E402
from sdkd_core.models import build_model  # noqa: E402


def load_reference(path: Path) -> types.ModuleType:
    """`lib.models.losses.kd_loss` from the checkout, without running `lib/models/__init__.py`
    (it imports every model and timm): its parent packages are stubs that only give a path."""
    for name in ("lib", "lib.models"):
        stub = types.ModuleType(name)
        stub.__path__ = [str(path / name.replace(".", "/"))]
        sys.modules[name] = stub
    return importlib.import_module("lib.models.losses.kd_loss")


def check_losses(ref, batch: int, classes: int) -> None:
    g = torch.Generator().manual_seed(0)
    z_s = torch.randn(batch, classes, generator=g) * 3
    z_t = torch.randn(batch, classes, generator=g) * 5
    dist_kd = sys.modules["lib.models.losses.dist_kd"]
    for tau in (1.0, 4.0):
        print(f"loss functions, tau {tau:g} (random logits {batch} x {classes}):")

        def ref_y(z, tau=tau):
            return (z / tau).softmax(dim=1)

        for i, name in enumerate(("inter", "intra")):
            rel = dist_kd.inter_class_relation if name == "inter" else dist_kd.intra_class_relation

            def ours(s, t, i=i, tau=tau):
                return dist_relations(s, t, tau)[i]

            def theirs(s, t, rel=rel, tau=tau):
                return tau**2 * rel(ref_y(s), ref_y(t))

            row(name + " x tau^2", ours(z_s, z_t), theirs(z_s, z_t),
                logit_grad(ours, theirs, z_s, z_t))
        module = ref.DIST(beta=1, gamma=1, tau=tau)

        def ours_total(s, t, tau=tau):
            return sum(dist_relations(s, t, tau))

        row("DIST(beta=1, gamma=1)", ours_total(z_s, z_t), module(z_s, z_t),
            logit_grad(ours_total, module, z_s, z_t))


class LogitsOnly(nn.Module):
    """The reference hooks a network's output and expects the logits tensor itself."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).logits


def check_training_loss(ref, batch: int, classes: int) -> None:
    print(f"full training loss (resnet32x4 -> resnet8x4 at random weights, {batch} images "
          f"3x32x32, {classes} classes; reference KDLoss 'dist_t4', weights 1 and 2):")
    torch.manual_seed(0)
    student = build_model("resnet8x4", classes, 3)
    teacher = build_model("resnet32x4", classes, 3)
    ref_student, ref_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    ours = build_distiller("dist", student, teacher).train()
    s_wrap, t_wrap = LogitsOnly(ref_student).train(), LogitsOnly(ref_teacher).eval()
    kd = ref.KDLoss(s_wrap, t_wrap, "cifar_resnet8x4", "cifar_resnet32x4", nn.CrossEntropyLoss(),
                    kd_method="dist_t4", ori_loss_weight=1.0, kd_loss_weight=2.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    z_s, losses = ours(x, y, 0)
    total = sum(losses.values())
    ref_total = kd(x, y)
    total.backward()
    ref_total.backward()
    grads = grad_diff([p.grad for p in student.parameters()],
                      [q.grad for q in ref_student.parameters()])
    with torch.no_grad():
        ce = F.cross_entropy(s_wrap(x), y)  # the reference's CE on the same (train-mode) logits
    row("ce", losses["ce"], ce)
    row("total (ce + 2 DIST)", total, ref_total, grads)
    print(f"  student weight gradients: max|diff| {grads[0]:.2e}, {grads[1]:.2e} of the largest")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="an extracted checkout of hunto/image_classification_sota")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args(argv)
    ref = load_reference(args.reference.resolve())
    torch.set_num_threads(1)
    check_losses(ref, args.batch, args.classes)
    check_training_loss(ref, args.batch, args.classes)


if __name__ == "__main__":
    main()
