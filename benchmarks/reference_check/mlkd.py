"""MLKD side by side with its reference: the same weights and images through the project's
`mlkd` and through Jin-Ying/Multi-Level-Logit-Distillation's own
`mdistiller/distillers/KD_ours.py` (its loss functions, then `KD_ours.forward_train` on copies
of the same student and teacher, each wrapped to return `(logits, feats)` as mdistiller's
networks do); with `--ls-reference`, also MLKD+LS against sunshangquan/logit-standardization-KD's
`mdistiller/distillers/MLKD.py` (`--logit-stand --base-temp 2 --kd-weight 9`).

    git -C <Jin-Ying/Multi-Level-Logit-Distillation> archive HEAD | tar -x -C /tmp/ref-mlkd
    git -C <sunshangquan/logit-standardization-KD> archive HEAD mdistiller | tar -x -C /tmp/ref-ls
    python benchmarks/reference_check/mlkd.py --reference /tmp/ref-mlkd --ls-reference /tmp/ref-ls

Prints, per loss term, the largest absolute and relative difference and the largest difference
of the gradients (w.r.t. the student's logits, then its weights). CPU, float32. The images are
a weak and a strong view from the project's loader (`strong_view`).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_check.differences import grad_diff, logit_grad, row  # noqa: E402
from sdkd_core.data import load_dataset  # noqa: E402 (after the path is set)
from sdkd_core.distillers import build_distiller  # noqa: E402
from sdkd_core.distillers.mlkd import (  # noqa: E402
    batch_relation,
    below_median_fraction,
    class_relation,
)
from sdkd_core.loader import BatchLoader  # noqa: E402
from sdkd_core.losses import kd_loss  # noqa: E402
from sdkd_core.models import build_model  # noqa: E402


def load_reference(path: Path, module: str) -> types.ModuleType:
    """`mdistiller.distillers.<module>` from the checkout, without running the packages'
    `__init__.py` (they import every distiller and dataset): stub parents that give a path."""
    for name in [k for k in sys.modules if k == "mdistiller" or k.startswith("mdistiller.")]:
        del sys.modules[name]  # a second checkout must not reuse the first one's modules
    for name in ("mdistiller", "mdistiller.distillers"):
        stub = types.ModuleType(name)
        stub.__path__ = [str(path / name.replace(".", "/"))]
        sys.modules[name] = stub
    return importlib.import_module(f"mdistiller.distillers.{module}")


def cfg(temperature: float, ce: float, kd: float, logit_stand: bool = False):
    """The yacs fields the distillers read, as plain namespaces."""
    ns = types.SimpleNamespace
    return ns(KD=ns(TEMPERATURE=temperature, LOSS=ns(CE_WEIGHT=ce, KD_WEIGHT=kd)),
              EXPERIMENT=ns(LOGIT_STAND=logit_stand))


def check_functions(ref, batch: int, classes: int) -> None:
    g = torch.Generator().manual_seed(0)
    z_s = torch.randn(batch, classes, generator=g) * 3
    z_t = torch.randn(batch, classes, generator=g) * 5
    print(f"loss functions (random logits {batch} x {classes}):")
    pairs = {"kd_loss": (kd_loss, ref.kd_loss), "cc_loss (class level)": (class_relation, None),
             "bc_loss (batch level)": (batch_relation, None)}
    for temp in (2.0, 3.0, 4.0, 5.0, 6.0):
        for name, (ours_fn, ref_fn) in pairs.items():
            if ref_fn is None:
                rel = ref.cc_loss if name.startswith("cc") else ref.bc_loss

                def theirs(s, t, rel=rel, temp=temp):
                    return rel(s, t, temp)

                def ours(s, t, fn=ours_fn, temp=temp):
                    return fn(torch.softmax(s / temp, 1), torch.softmax(t / temp, 1))
            else:
                def theirs(s, t, fn=ref_fn, temp=temp):
                    return fn(s, t, temp)

                def ours(s, t, fn=ours_fn, temp=temp):
                    return fn(s, t, temp)
            row(f"{name} T={temp:g}", ours(z_s, z_t), theirs(z_s, z_t),
                logit_grad(ours, theirs, z_s, z_t))
    # The masks: np.percentile(., 50) and `<=` as the reference, against torch.quantile.
    same, trials = 0, 0
    for n in (2, 3, 63, 64, 100, 128):
        for _ in range(500):
            v = torch.softmax(torch.randn(n, classes, generator=g) * 4, 1).max(1).values
            if trials % 5 == 0:  # ties at the median as well
                v = v.round(decimals=1)
            frac = (v <= float(np.percentile(v.numpy().flatten(), 50))).float().mean()
            same += int(frac.item() == below_median_fraction(v).item())
            trials += 1
    print(f"  below-median fraction: equal to numpy's in {same} of {trials} random batches "
          "(sizes 2 to 128, a fifth of them with ties)")


class Mdistiller(nn.Module):
    """mdistiller's networks return (logits, feats); the reference unpacks both."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).logits, None


def views(batch: int, classes: int):
    data = load_dataset("synthetic_cifar100", n_train=batch, n_test=classes)
    loader = BatchLoader(data.train_x, data.train_y, data.info, batch, train=True, seed=0,
                         inputs=("strong_view",))
    x, y, extras = next(loader.batches())
    return x, extras["strong_view"], y


def check_forward(ref_cls, title: str, values: dict, ref_config, batch: int, classes: int,
                  strong: bool = True) -> None:
    print(f"{title}:")
    torch.manual_seed(0)
    student = build_model("resnet8x4", classes, 3)
    teacher = build_model("resnet32x4", classes, 3)
    # An untrained teacher in eval mode (BatchNorm's initial running statistics) gives logits
    # of std ~19 and a confidence of 1 everywhere; scaled down, its confidences spread (about
    # 0.8 to 0.9), so the masks pick some images and not others.
    with torch.no_grad():
        teacher.classifier.weight.mul_(0.2)
        teacher.classifier.bias.mul_(0.2)
    ref_student, ref_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    ours = build_distiller("mlkd", student, teacher, values).train()
    theirs = ref_cls(Mdistiller(ref_student), Mdistiller(ref_teacher), ref_config).train()
    x, x_strong, y = views(batch, classes)
    z_s, losses = ours(x, y, 0, **({"strong_view": x_strong} if strong else {}))
    z_ref, ref_losses = theirs.forward_train(image_weak=x, image_strong=x_strong if strong else x,
                                             target=y)
    total, ref_total = sum(losses.values()), sum(ref_losses.values())
    total.backward()
    ref_total.backward()
    grads = grad_diff([p.grad for p in student.parameters()],
                      [q.grad for q in ref_student.parameters()])
    row("loss_ce", losses["ce"], ref_losses["loss_ce"])
    row("loss_kd (weak + strong)", losses["kd_weak"] + losses["kd_strong"], ref_losses["loss_kd"])
    row("loss_cc", losses["cc"], ref_losses["loss_cc"])
    row("loss_bc", losses["bc"], ref_losses["loss_bc"])
    row("total", total, ref_total, grads)
    row("returned logits", z_s.abs().max(), z_ref.abs().max())
    bn = [(a - b).abs().max().item() for a, b in zip(student.buffers(), ref_student.buffers(),
                                                    strict=True) if a.is_floating_point()]
    print(f"  student weight gradients: max|diff| {grads[0]:.2e}, {grads[1]:.2e} of the largest; "
          f"BatchNorm running statistics after the step: max|diff| {max(bn):.2e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="an extracted checkout of Jin-Ying/Multi-Level-Logit-Distillation")
    parser.add_argument("--ls-reference", type=Path,
                        help="an extracted checkout of sunshangquan/logit-standardization-KD")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ref = load_reference(args.reference.resolve(), "KD_ours")
    check_functions(ref, args.batch, args.classes)
    b, c = args.batch, args.classes
    check_forward(ref.KD_ours, "full forward_train, CIFAR defaults (T 4, CE 0.1, KD 0.9)", {},
                  cfg(4, 0.1, 0.9), b, c)
    check_forward(ref.KD_ours, "full forward_train, ImageNet settings (T 1, CE 0.5, KD 0.5)",
                  {"mlkd.temperature": 1, "mlkd.ce_weight": 0.5, "mlkd.kd_weight": 0.5},
                  cfg(1, 0.5, 0.5), b, c)
    check_forward(ref.KD_ours, "mlkd.strong_augment=false (the reference given the weak view "
                  "twice)", {"mlkd.strong_augment": False}, cfg(4, 0.1, 0.9), b, c,
                  strong=False)
    if args.ls_reference:
        ls = load_reference(args.ls_reference.resolve(), "MLKD")
        check_forward(ls.MLKD, "MLKD+LS against logit-standardization-KD's MLKD.py (T 2, CE "
                      "0.1, KD 9)", {"mlkd.logit_standardize": True, "mlkd.temperature": 2,
                                     "mlkd.kd_weight": 9}, cfg(2, 0.1, 9, True), b, c)


if __name__ == "__main__":
    main()
