"""Errors a command-line tool reports in one line: bad input (exit 2) and a diverged training
(exit 1). No torch here, so every tool can catch them without importing it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Something the user asked for cannot be done; the message says what and how to fix it."""


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float):
        super().__init__(f"training diverged in epoch {epoch}: loss {loss}")
        self.epoch, self.loss = epoch, loss


def _shared_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def nearest(value: str, known: Iterable[str]) -> str | None:
    """The closest known name, case-insensitively; ties go to the longer shared prefix
    (plain difflib picks 'resnet32' for 'resnet21')."""
    lowered = {k.lower(): k for k in known}
    query = value.lower()
    close = difflib.get_close_matches(query, lowered, n=len(lowered))
    if not close:
        return None

    def score(k: str) -> tuple[float, int]:
        return difflib.SequenceMatcher(None, query, k).ratio(), _shared_prefix(query, k)

    return lowered[max(close, key=score)]


def unknown_choice(
    kind: str, value: str, known: Iterable[str], error: type[UserError] = UserError
) -> UserError:
    """An error for a name that is not one of `known`, suggesting the nearest valid one."""
    known = list(known)
    close = nearest(value, known)
    hint = f"; did you mean '{close}'?" if close else ";"
    return error(f"unknown {kind} '{value}'{hint} Known {kind}s: {', '.join(known)}")
