"""A method's published claims, as data a run can test.

A method lists its paper's claims in `Distiller.claims`; the report (analysis/claims.py) tests
each one on a run folder and says whether the run supports it, does not, or cannot test it,
with the numbers behind the verdict. Four kinds cover what distillation papers usually claim;
a researcher's own method declares its claims with the same kinds, in its own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BeatsTunedBaselines:
    """The method, tuned, has a higher test accuracy than every other tuned method, per pair."""

    text: str


@dataclass(frozen=True)
class AttendsLikeTeacher:
    """The method's student's Grad-CAM++ maps are as close to the teacher's as those of the
    students of `at_least_as`, and closer than those of `more_than` (method names)."""

    text: str
    at_least_as: tuple[str, ...] = ()
    more_than: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeadCloserToTeacher:
    """An extra network the method trains (a key of its `heads`) attends more like the
    teacher than the method's own student does."""

    text: str
    head: str


@dataclass(frozen=True)
class SettingBeats:
    """With `key` set to `better`, the method's test accuracy is higher than with `worse`
    (testable when the run varies the key)."""

    text: str
    key: str
    better: Any
    worse: Any


Claim = BeatsTunedBaselines | AttendsLikeTeacher | HeadCloserToTeacher | SettingBeats
