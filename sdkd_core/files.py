"""Files every part of the platform writes: atomically (temporary file + rename), so a reader
never sees half a file and a writer killed halfway leaves the old one; and content hashes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every key of every row, in order of first appearance (later epochs may add losses)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` a temporary file beside `path`, then rename it over `path`.

    A reader sees the old file or the new one, never a part of either; a writer killed halfway
    leaves the old file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # still there only when writing failed
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, document: object) -> Path:
    return write_text(path, json.dumps(document, indent=2) + "\n")


def write_csv(path: str | Path, rows: list[dict[str, Any]], first: Iterable[str] = ()) -> Path:
    """Replace `path` with `rows`; a reader never sees a half-written file.

    `first` are columns that lead, and make the header even when there are no rows yet.
    """
    columns = columns_of([dict.fromkeys(first), *rows])

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
