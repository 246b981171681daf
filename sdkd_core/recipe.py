"""How a model is trained: the `Recipe` and the rules its fields must meet (`RECIPE_RULES`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from typing import Any, Literal

from sdkd_core.errors import UserError

# auto: bf16 autocast on GPUs (faster; every reference runs fp32), fp32 on the CPU (where bf16
# is slower). fp32 reproduces the references' numerics everywhere.
PRECISIONS = ("auto", "bf16", "fp32")
MAX_SEED = 2**32 - 1  # seeds go to torch and numpy generators, which take 0..2**32-1 alike
TEACHER_EPOCHS = 4  # teachers train once, on all their images: a few epochs make a strong one


def _increasing_fractions(ms: tuple[float, ...], _recipe) -> bool:
    return all(0 < m < 1 for m in ms) and all(a < b for a, b in pairwise(ms))


POLY_POWER = 0.9

# What each recipe field must be: (the test, given the value and the whole recipe; the
# requirement, with an example). The command-line flags (study/cli.py) use the same rules. Every
# test fails for nan, and inf fails each one that has no upper bound by being finite.
RECIPE_RULES: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "epochs": (lambda v, _: v >= 1, "at least 1, like 8"),
    "lr": (lambda v, _: math.isfinite(v) and v > 0, "positive and finite, like 0.05"),
    "momentum": (lambda v, _: 0 <= v < 1, "in [0, 1), like 0.9"),
    "weight_decay": (lambda v, _: math.isfinite(v) and v >= 0, "finite and >= 0, like 5e-4"),
    "batch_size": (lambda v, _: v >= 2, "at least 2, like 64"),
    "schedule": (lambda v, _: v in ("step", "cosine", "poly"), "step, cosine or poly"),
    "milestones": (_increasing_fractions,
                   "increasing fractions of the epochs in (0, 1), each once, like 0.5,0.75"),
    "gamma": (lambda v, _: 0 < v <= 1, "in (0, 1], like 0.1"),
    "warmup_epochs": (lambda v, r: 0 <= v < r.epochs, "in [0, epochs), like 0"),
    "precision": (lambda v, _: v in PRECISIONS, "auto, bf16 or fp32"),
}


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. Milestones are fractions of `epochs` (0.5 = halfway)."""

    epochs: int = 8
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    batch_size: int = 64
    # poly: (1 - progress)^0.9, the segmentation recipe (DeepLab; CIRKD, per iteration)
    schedule: Literal["step", "cosine", "poly"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        for name, (ok, must) in RECIPE_RULES.items():
            value = getattr(self, name)
            if not ok(value, self):
                shown = list(value) if isinstance(value, tuple) else value
                raise UserError(f"{name}={shown!r} must be {must}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown recipe keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def autocast_bf16(self, on_gpu: bool) -> bool:
        """Whether training and evaluation run under bf16 autocast on this device."""
        return self.precision == "bf16" or (self.precision == "auto" and on_gpu)

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """Multiplier of the base lr at optimizer step `step` (linear warm-up, then decay)."""
        epoch = step / steps_per_epoch
        if epoch < self.warmup_epochs:
            return (step + 1) / (self.warmup_epochs * steps_per_epoch)
        progress = min(1.0, (epoch - self.warmup_epochs) / (self.epochs - self.warmup_epochs))
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if self.schedule == "poly":
            return (1 - progress) ** POLY_POWER
        passed = sum(epoch >= m * self.epochs for m in self.milestones)
        return self.gamma**passed
