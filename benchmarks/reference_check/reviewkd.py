"""ReviewKD side by side with mdistiller's own code (megvii-research/mdistiller, a08d46f).

    python benchmarks/reference_check/reviewkd.py --reference /tmp/ref-mdistiller

imports `mdistiller/distillers/ReviewKD.py` (its `ReviewKD` class with a stand-in cfg) and
mdistiller's CIFAR `resnet.py` / `wrn.py` / `vgg.py` from the extracted checkout, builds three
pairs (resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_16_2, vgg13 -> vgg8; 100 classes, 32x32, CPU,
fp32) with mdistiller's weights copied into the project's models (`load_teacher_checkpoint`,
RepDistiller's names), the ABF weights copied from mdistiller's distiller into ours, and prints,
as max |a - b| and that over max |b| (b: mdistiller's):

1. taps: feats, preact_feats and the pooled feature of both networks, eval and train mode;
2. maps: the two distillers fed the same student and teacher maps (stubbed networks): the CE and
   ReviewKD losses, the gradients of the ABFs and of every student map and the pooled feature;
3. end to end: real forward passes, the losses and the gradients of the ABFs and of every
   student parameter (mapped by name).

The ramp is checked on the way: mdistiller's epoch E (counted from 1) is the engine's E - 1.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sdkd_core.distillers import build_distiller  # noqa: E402
from sdkd_core.models import ModelOutput  # noqa: E402
from sdkd_core.models.published import _expected, load_teacher_checkpoint  # noqa: E402

CLASSES, BATCH, SIDE = 100, 8, 32
REF_EPOCH = 5  # mdistiller's 5th epoch: ramp 5/20 (the engine's epoch 4)
# (teacher, student, reference module, its builders, cfg.REVIEWKD values): resnet8x4's are
# cfg.py's defaults; wrn_16_2's and vgg8's dvlab-research/ReviewKD build_review_kd's 'wrn' and
# 'vgg' branches (OUT_SHAPES None there: its SHAPES).
PAIRS = [
    ("resnet32x4", "resnet8x4", "resnet", ("resnet32x4", "resnet8x4"),
     {"IN_CHANNELS": [64, 128, 256, 256], "OUT_CHANNELS": [64, 128, 256, 256],
      "SHAPES": [1, 8, 16, 32], "OUT_SHAPES": [1, 8, 16, 32]}),
    ("wrn_40_2", "wrn_16_2", "wrn", ("wrn_40_2", "wrn_16_2"),
     {"IN_CHANNELS": [32, 64, 128, 128], "OUT_CHANNELS": [32, 64, 128, 128],
      "SHAPES": [1, 8, 16, 32], "OUT_SHAPES": [1, 8, 16, 32]}),
    ("vgg13", "vgg8", "vgg", ("vgg13_bn", "vgg8_bn"),
     {"IN_CHANNELS": [128, 256, 512, 512, 512], "OUT_CHANNELS": [128, 256, 512, 512, 512],
      "SHAPES": [1, 4, 4, 8, 16], "OUT_SHAPES": [1, 4, 4, 8, 16]}),
]


def load_reference(path: Path):
    """mdistiller's ReviewKD module and CIFAR model modules, without its package __init__s (they
    import every model and distiller, and their dependencies)."""
    for package, folder in (("ref_distillers", "mdistiller/distillers"),
                            ("ref_cifar", "mdistiller/models/cifar")):
        module = types.ModuleType(package)
        module.__path__ = [str(path / folder)]
        sys.modules[package] = module
    models = {name: importlib.import_module(f"ref_cifar.{name}")
              for name in ("resnet", "wrn", "vgg")}
    return importlib.import_module("ref_distillers.ReviewKD"), models


def diff(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    gap = (ours.detach().double() - ref.detach().double()).abs().max().item()
    scale = ref.detach().double().abs().max().item()
    return gap, gap / scale if scale > 0 else float("nan")


def row(pair: str, what: str, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    worst = max((diff(a, b) for a, b in pairs), key=lambda d: d[0])
    print(f"| {pair} | {what} | {len(pairs)} | {worst[0]:.3g} | {worst[1]:.3g} |")


def ours_from(ref_net: torch.nn.Module, arch: str, folder: Path):
    """The project's `arch` holding mdistiller's weights (RepDistiller's names)."""
    path = folder / f"{arch}.pth"
    torch.save({"model": ref_net.state_dict()}, path)
    return load_teacher_checkpoint(path, arch, CLASSES, 3)


def ref_cfg(values: dict, student_preact: bool):
    return types.SimpleNamespace(REVIEWKD=types.SimpleNamespace(
        CE_WEIGHT=1.0, REVIEWKD_WEIGHT=5.0, WARMUP_EPOCHS=20, MAX_MID_CHANNEL=512,
        STU_PREACT=student_preact, **values))


def check_taps(label, ref_net, our_net, x):
    # On copies: training-mode passes move BN statistics (mdistiller's WRN taps move three
    # layers' twice), which the distillers' teachers must not see.
    ref_net, our_net = copy.deepcopy(ref_net), copy.deepcopy(our_net)
    for mode in ("eval", "train"):
        ref_net.train(mode == "train"), our_net.train(mode == "train")
        with torch.no_grad():
            _, ref = ref_net(x)
            out = our_net(x, preact=True)
        row(label, f"taps {mode}: feats", list(zip(out.feats, ref["feats"], strict=True)))
        row(label, f"taps {mode}: preact_feats[1:]",
            list(zip(out.preact_feats[1:], ref["preact_feats"][1:], strict=True)))
        row(label, f"taps {mode}: pooled", [(out.pooled, ref["pooled_feat"])])


def stub(net, logits, maps, preacts, pooled, ref_format: bool):
    """`net` answering every call with these tensors (mdistiller's tuple or our ModelOutput)."""
    if ref_format:
        net.forward = lambda x: (logits, {"feats": maps, "preact_feats": preacts,
                                          "pooled_feat": pooled})
    else:
        net.forward = lambda x, preact=False: ModelOutput(logits, maps, pooled, preacts)


def leaves(out: ModelOutput, grad: bool):
    def make(t):
        return t.detach().clone().requires_grad_(grad)

    return (make(out.logits), [make(f) for f in out.feats], [make(f) for f in out.preact_feats],
            make(out.pooled))


def check_pair(review_module, models, teacher, student, module, builders, values,
               student_preact, x, y):
    label = f"{teacher}->{student}{' preact' if student_preact else ''}"
    build = [getattr(models[module], name) for name in builders]
    torch.manual_seed(0)
    ref_t, ref_s = build[0](num_classes=CLASSES), build[1](num_classes=CLASSES)
    with tempfile.TemporaryDirectory() as folder:
        our_t = ours_from(ref_t, teacher, Path(folder))
        our_s = ours_from(ref_s, student, Path(folder)).requires_grad_(True)
    if not student_preact:
        check_taps(teacher, ref_t, our_t, x)
        check_taps(student, ref_s, our_s, x)
    ref_t.eval()
    torch.manual_seed(1)
    ref = review_module.ReviewKD(ref_s, ref_t, ref_cfg(values, student_preact))
    torch.manual_seed(1)
    ours = build_distiller("reviewkd", our_s, our_t,
                           {"reviewkd.student_preact": student_preact})
    init = [(a, b) for a, b in zip(ours.abfs.state_dict().values(),
                                   ref.abfs.state_dict().values(), strict=True)]
    row(label, "ABF init, same seed (not copied)", init)
    ours.abfs.load_state_dict(ref.abfs.state_dict())
    ref_abf_names = [n for n, _ in ref.abfs.named_parameters()]

    # 2. The same maps into both: stubbed students and teachers.
    ref.train(), ours.train()
    with torch.no_grad():
        s_out, t_out = our_s(x, preact=True), our_t(x, preact=True)
    ref_leaves, our_leaves = leaves(s_out, True), leaves(s_out, True)
    stub(ref.student, *ref_leaves, ref_format=True)
    stub(ours.student, *our_leaves, ref_format=False)
    stub(ref.teacher, *leaves(t_out, False), ref_format=True)
    stub(our_t, *leaves(t_out, False), ref_format=False)
    _, ref_losses = ref(image=x, target=y, epoch=REF_EPOCH)
    _, our_losses = ours(x, y, REF_EPOCH - 1)
    compare_losses(label + " maps", our_losses, ref_losses)
    sum(ref_losses.values()).backward()
    sum(our_losses.values()).backward()
    used = our_leaves[2] if student_preact else our_leaves[1]
    ref_used = ref_leaves[2] if student_preact else ref_leaves[1]
    row(label + " maps", "grad of student maps 1..N",
        list(zip([f.grad for f in used[1:]], [f.grad for f in ref_used[1:]], strict=True)))
    row(label + " maps", "grad of pooled", [(our_leaves[3].grad, ref_leaves[3].grad)])
    row(label + " maps", "grad of ABFs", abf_grads(ours, ref, ref_abf_names))

    # 3. End to end: the real networks.
    for net in (ref.student, ours.student, ref.teacher, our_t):
        del net.forward
    ref.zero_grad(), ours.zero_grad()
    _, ref_losses = ref(image=x, target=y, epoch=REF_EPOCH)
    _, our_losses = ours(x, y, REF_EPOCH - 1)
    compare_losses(label + " e2e", our_losses, ref_losses)
    sum(ref_losses.values()).backward()
    sum(our_losses.values()).backward()
    row(label + " e2e", "grad of ABFs", abf_grads(ours, ref, ref_abf_names))
    names = {ours_key: ref_key for ref_key, (ours_key, _) in _expected(our_s, True).items()}
    ref_params = dict(ref_s.named_parameters())
    row(label + " e2e", "grad of student params",
        [(p.grad, ref_params[names[n]].grad) for n, p in our_s.named_parameters()])


def compare_losses(label, ours, ref):
    row(label, "loss ce", [(ours["ce"], ref["loss_ce"])])
    row(label, "loss reviewkd", [(ours["reviewkd"], ref["loss_kd"])])
    print(f"|  | (values: reviewkd {ours['reviewkd'].item():.6g} ours, "
          f"{ref['loss_kd'].item():.6g} mdistiller) |  |  |  |")


def abf_grads(ours, ref, names):
    ref_params = dict(ref.abfs.named_parameters())
    return [(p.grad, ref_params[n].grad) for n, p in ours.abfs.named_parameters()
            if n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="an extracted mdistiller checkout (git archive of the mirror)")
    args = parser.parse_args()
    review_module, models = load_reference(args.reference)
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, SIDE, SIDE, generator=g)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    print(f"torch {torch.__version__}, CPU, fp32, batch {BATCH} of 3x{SIDE}x{SIDE}, "
          f"mdistiller epoch {REF_EPOCH} (ramp {REF_EPOCH}/20)\n")
    print("| pair | quantity | tensors | max abs diff | max rel diff |")
    print("|---|---|---|---|---|")
    for teacher, student, module, builders, values in PAIRS:
        for student_preact in (False, True):
            check_pair(review_module, models, teacher, student, module, builders, values,
                       student_preact, x, y)


if __name__ == "__main__":
    main()
