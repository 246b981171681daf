"""What every command-line tool of the platform shares: a usage error is one line on stderr
and exit code 2 (never a traceback), and durations read as h:mm:ss."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from sdkd_core.errors import DivergedError, UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_main(prog: str, body: Callable[[], int]) -> int:
    """Run `body`; bad input becomes one line on stderr and exit code 2, a diverged
    training one line and exit code 1."""
    try:
        return body()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except DivergedError as err:  # not bad input, but no traceback helps either
        print(f"{prog}: {err}; try a lower learning rate or loss weight", file=sys.stderr)
        return 1


def check_output_folder(flag: str, path: str | Path) -> None:
    """A folder to write into: absent (it is made) or a folder, under a writable folder.
    Checked without writing anything."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder; pass a folder path")
    if not os.access(existing, os.W_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable; pass a folder you can "
                        "write to")


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"

