"""Result files: CSV tables written atomically (temporary file + rename)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every key of every row, in order of first appearance (later epochs may add losses)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Replace `path` with `rows`; a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns_of(rows), restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
