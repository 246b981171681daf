"""CRD side by side with its reference: the same pooled features, embedding weights, memory
banks and negatives through the project's `crd` and through HobbitLong/RepDistiller's own
`crd/criterion.py` (`CRDLoss`: Embed, ContrastLoss) and `crd/memory.py` (`ContrastMemory`).

    git -C <mirror of HobbitLong/RepDistiller> archive HEAD | tar -x -C /tmp/ref-repdistiller
    python benchmarks/reference_check/crd.py --reference /tmp/ref-repdistiller

The reference takes the negatives as an input (`contrast_idx`, drawn by its data set): both
get the indices the project's sampler draws ('exact': column 0 the image itself, then nce_k
images of other classes). A few steps in a row, so the second and later use the Z fixed on the
first and the memory updated by the one before. Prints, per step, the largest absolute and
relative difference of the loss, of the gradients (both embeddings, the student's and the
teacher's pooled features), of Z and of both banks after the update. CPU; float32, then
float64. `ContrastMemory.__init__` moves its (unused) alias sampler to the GPU with `.cuda()`:
that one method is replaced by a no-op. In float64 the reference's temperature, which it keeps
in a float32 buffer (`params`, so T = 0.07000000029802322), is set to 0.07 as ours is; in float32
both use float32(0.07). Nothing else of the reference is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sdkd_core.distillers import build_distiller  # noqa: E402 (after the path is set)
from sdkd_core.models import build_model  # noqa: E402


def load_reference(path: Path) -> types.ModuleType:
    """`crd.criterion` from the checkout, its alias sampler kept on the CPU."""
    sys.path.insert(0, str(path))
    memory = importlib.import_module("crd.memory")
    memory.AliasMethod.cuda = lambda self: None  # CPU: the sampler is unused (idx is given)
    return importlib.import_module("crd.criterion")


def diff(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    ours, ref = ours.detach().double().flatten(), ref.detach().double().flatten()
    a = (ours - ref).abs().max().item()
    return a, a / max(ref.abs().max().item(), 1e-300)


def row(name: str, ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    a, r = diff(ours, ref)
    print(f"    {name:<26} max|diff| {a:.2e}  rel {r:.2e}")
    return a, r


def run(crd_ref, dtype: torch.dtype, args) -> float:
    """Both implementations through `args.steps` steps; the largest relative difference."""
    n, k, b = args.n_data, args.nce_k, args.batch
    torch.manual_seed(0)
    student, teacher = build_model(args.student, 100, 3), build_model(args.teacher, 100, 3)
    ours = build_distiller("crd", student, teacher, {"crd.nce_k": k}).train()
    labels = torch.arange(n) % 100  # CIFAR-100's 500 images a class
    ours.bind_data(labels)
    ours.to(dtype)
    opt = types.SimpleNamespace(s_dim=ours.embed_s.linear.in_features,
                                t_dim=ours.embed_t.linear.in_features, feat_dim=128,
                                nce_k=k, nce_t=0.07, nce_m=0.5, n_data=n)
    ref = crd_ref.CRDLoss(opt).to(dtype)
    if dtype == torch.float64:  # its T sits in a float32 buffer: 0.07 + 3e-10 (see above)
        ref.contrast.params[1] = 0.07
    with torch.no_grad():  # the same weights and banks (v1: student, v2: teacher)
        for mine, theirs in ((ours.embed_s, ref.embed_s), (ours.embed_t, ref.embed_t)):
            theirs.linear.weight.copy_(mine.linear.weight)
            theirs.linear.bias.copy_(mine.linear.bias)
        ref.contrast.memory_v1.copy_(ours.memory.student)
        ref.contrast.memory_v2.copy_(ours.memory.teacher)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for step in range(args.steps):
        index = torch.randperm(n, generator=g)[:b]
        # Pooled features as a ReLU network gives them: non-negative.
        f_s = torch.randn(b, opt.s_dim, generator=g, dtype=dtype).relu()
        f_t = torch.randn(b, opt.t_dim, generator=g, dtype=dtype).relu()
        contrast = torch.cat([index[:, None], ours.memory.negatives(labels[index], k)], 1)
        mine_s, mine_t = f_s.clone().requires_grad_(), f_t.clone().requires_grad_()
        ref_s, ref_t = f_s.clone().requires_grad_(), f_t.clone().requires_grad_()
        loss, v_s, v_t = ours.contrast_terms(mine_s, mine_t, contrast)
        loss.backward()
        ours.memory.update(v_s, v_t, index, 0.5)
        with contextlib.redirect_stdout(io.StringIO()):  # its "Z is set to" lines
            ref_loss = ref(ref_s, ref_t, index, contrast).squeeze()
        ref_loss.backward()
        print(f"  step {step + 1}: loss ours {loss.item():.6f} ref {ref_loss.item():.6f}")
        pairs = [("loss NCE_s + NCE_t", loss, ref_loss)]
        for side in ("s", "t"):
            mine = getattr(ours, f"embed_{side}").linear
            theirs = getattr(ref, f"embed_{side}").linear
            pairs += [(f"grad embed_{side}.{p}", getattr(mine, p).grad, getattr(theirs, p).grad)
                      for p in ("weight", "bias")]
        pairs += [
            ("grad student feature", mine_s.grad, ref_s.grad),
            ("grad teacher feature", mine_t.grad, ref_t.grad),
            ("Z (Z_s, Z_t)", ours.memory.z, ref.contrast.params[2:4]),
            ("student bank after update", ours.memory.student, ref.contrast.memory_v1),
            ("teacher bank after update", ours.memory.teacher, ref.contrast.memory_v2),
        ]
        worst = max(worst, *(row(name, a, r)[1] for name, a, r in pairs))
        for module in (ours, ref):
            module.zero_grad(set_to_none=True)
    return worst


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="an extracted checkout of HobbitLong/RepDistiller")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--n-data", type=int, default=50000)  # CIFAR-100's training set
    parser.add_argument("--nce-k", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    crd_ref = load_reference(args.reference.resolve())
    print(f"CRD ({args.teacher} -> {args.student} embeddings, N {args.n_data}, "
          f"K {args.nce_k}, batch {args.batch}, feat_dim 128, T 0.07, momentum 0.5)")
    for dtype in (torch.float32, torch.float64):
        print(f"{dtype}:")
        worst = run(crd_ref, dtype, args)
        print(f"  largest relative difference: {worst:.2e}")


if __name__ == "__main__":
    main()
