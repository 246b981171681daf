"""What every side-by-side check prints: the largest difference of a value and of gradients."""

from __future__ import annotations

import torch


def row(name: str, ours, ref, grad: tuple[float, float] | None = None) -> None:
    """One line: both values, their largest absolute and relative difference (and gradients')."""
    ours, ref = torch.as_tensor(ours).detach().double(), torch.as_tensor(ref).detach().double()
    a = (ours - ref).abs().max().item()
    r = a / max(ref.abs().max().item(), 1e-30)
    g = "" if grad is None else f"  max|grad diff| {grad[0]:.2e} (rel {grad[1]:.2e})"
    print(f"  {name:<28} ours {ours.item():>12.6f}  ref {ref.item():>12.6f}  "
          f"max|diff| {a:.2e}  rel {r:.2e}{g}")


def grad_diff(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> tuple[float, float]:
    """The largest absolute difference of the gradients, and that over the largest gradient."""
    a = max((p - q).abs().max().item() for p, q in zip(ours, ref, strict=True))
    return a, a / max(max(q.abs().max().item() for q in ref), 1e-30)


def logit_grad(fn_ours, fn_ref, z_s, z_t) -> tuple[float, float]:
    """grad_diff of two losses of the student logits `z_s` (teacher `z_t` fixed)."""
    a, b = z_s.clone().requires_grad_(), z_s.clone().requires_grad_()
    fn_ours(a, z_t).backward()
    fn_ref(b, z_t).backward()
    return grad_diff([a.grad], [b.grad])
