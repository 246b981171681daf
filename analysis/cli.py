"""Flags every analysis command shares, checked before the run folder is read."""

from __future__ import annotations

import argparse

from sdkd_core.cli import check_output_folder
from sdkd_core.errors import UserError


def check_analysis_flags(args: argparse.Namespace) -> None:
    """An analysis command's flags (--images, --show, --out), before the run folder is read."""
    images, show = getattr(args, "images", None), getattr(args, "show", None)
    if images is not None and images < 2:
        raise UserError(f"--images {images}: give at least 2 test images, like 64")
    if show is not None and not 1 <= show <= images:
        raise UserError(f"--show {show}: give 1 to --images ({images}) grid rows, like 6")
    if getattr(args, "out", None) is not None:
        check_output_folder("--out", args.out)
