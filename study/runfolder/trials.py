"""A trial as the sweep plans and records it: method, pair, seed, settings, role and name.

Tune carries a trial as a plain config dict (it is pickled and written to the trial's
params.json); `PlannedTrial.to_config` and `from_config` are the only conversions, and every
trial name is formed here. A trial's name is its identity in results.csv and on --resume.

The roles, in code, files, report and docs alike:
- `baseline`: a method at its settings, on every pair and seed (the space's `baselines:`);
- `drawn`: a configuration Optuna drew for a tuned method (`search.methods`), on the search seed;
- `confirming`: a chosen drawn configuration again, on another seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BASELINE, DRAWN, CONFIRMING = "baseline", "drawn", "confirming"
ROLES = (BASELINE, DRAWN, CONFIRMING)
# Roles that always run to their last epoch: ASHA and Optuna see drawn trials only.
FULL_LENGTH = (BASELINE, CONFIRMING)
CONFIRMING_SUFFIX = "-s"  # a confirming trial is named <drawn trial>-s<seed>


def pair_label(teacher: str, student: str) -> str:
    return f"{teacher}->{student}"


def drawn_name(method: str, number: int) -> str:
    """The name of `method`'s `number`-th (from 1) drawn trial."""
    return f"{method}-{DRAWN}-{number:04d}"


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of a sweep (or one `distill.py` run): what it trains, and under which name.

    `params` are the method's settings (`<method>.<key>: value`, the pair's own and the drawn
    ones); `recipe` the recipe fields the pair changes; `name` defaults to the baseline's name,
    which is also what `distill.py` calls its run.
    """

    method: str
    teacher: str
    student: str
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    role: str = BASELINE
    name: str = ""
    recipe: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {ROLES}")
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "recipe", dict(self.recipe))
        if not self.name:
            name = f"{self.method}-{self.teacher}-{self.student}-s{self.seed}"
            object.__setattr__(self, "name", name)

    @property
    def pair(self) -> str:
        return pair_label(self.teacher, self.student)

    def confirming(self, seed: int) -> PlannedTrial:
        """This drawn trial's configuration again, on another seed."""
        return PlannedTrial(self.method, self.teacher, self.student, seed, self.params,
                            CONFIRMING, f"{self.name}{CONFIRMING_SUFFIX}{seed}", self.recipe)

    def to_config(self) -> dict[str, Any]:
        """The Tune config (and params.json) of this trial."""
        return {"trial_name": self.name, "role": self.role, "method": self.method,
                "teacher": self.teacher, "student": self.student, "seed": self.seed,
                "params": dict(self.params), "recipe": dict(self.recipe)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PlannedTrial:
        return cls(config["method"], config["teacher"], config["student"], int(config["seed"]),
                   config.get("params", {}), config.get("role", BASELINE),
                   config.get("trial_name", ""), config.get("recipe", {}))


def confirmed_trial(confirming_name: str) -> str:
    """The drawn trial a confirming trial repeats (its name without the seed suffix)."""
    return confirming_name.rsplit(CONFIRMING_SUFFIX, 1)[0]
