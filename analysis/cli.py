"""What every analysis command shares: `python -m analysis.<command> RUN [flags]`.

`analysis_main` builds the parser (the RUN positional and the shared flags a command has),
checks every flag before the run folder is read, loads the run, runs the command's body and
prints what it returns, one item a line. Bad input is one line on stderr and exit code 2, with
nothing written; a run with nothing to show one line and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from analysis.run import Run, Skipped, load_run
from sdkd_core.cli import OneLineParser, check_output_folder, run_main
from sdkd_core.errors import UserError

# A command's work on a loaded run: what to print (written paths, messages), one item a line.
Body = Callable[[Run, argparse.Namespace], Iterable[object]]


def analysis_parser(module: str, doc: str, *, images: str | None = None, show: bool = False,
                    no_gradcam: bool = False, out: str | None = None) -> OneLineParser:
    """`python -m <module>`, described by `doc`'s first paragraph: RUN, then --images (`images`
    says what the test images are for), --show, --no-gradcam and --out (`out`: its default
    folder under <run>/report), each where given."""
    p = OneLineParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    p.add_argument("run", help="the run folder study/sweep.py wrote (runs/<name>)")
    if images is not None:
        p.add_argument("--images", type=int, default=64,
                       help=f"test images {images} average over, at least 2 (default 64)")
    if show:
        p.add_argument("--show", type=int, default=6,
                       help="images in the overlay grid, 1 to --images (default 6)")
    if no_gradcam:
        p.add_argument("--no-gradcam", action="store_true",
                       help="skip the Grad-CAM++ section (it needs the trials' checkpoints)")
    if out is not None:
        p.add_argument("--out", default=None,
                       help=f"output folder, not a file (default <run>/report/{out})")
    return p


def check_analysis_flags(args: argparse.Namespace) -> None:
    """An analysis command's flags (--images, --show, --out), before the run folder is read."""
    images, show = getattr(args, "images", None), getattr(args, "show", None)
    if images is not None and images < 2:
        raise UserError(f"--images {images}: give at least 2 test images, like 64")
    if show is not None and not 1 <= show <= images:
        raise UserError(f"--show {show}: give 1 to --images ({images}) grid rows, like 6")
    if getattr(args, "out", None) is not None:
        check_output_folder("--out", args.out)


def analysis_main(argv: list[str] | None, body: Body, module: str, doc: str,
                  **flags) -> int:
    """Parse `argv` with `analysis_parser(module, doc, **flags)`, check the flags, load the run
    and print each item `body(run, args)` returns; `args.out` reaches the body as a Path or
    None. The exit code: 0, 2 for bad input, 1 when the run has nothing to show."""
    args = analysis_parser(module, doc, **flags).parse_args(argv)

    def run() -> int:
        check_analysis_flags(args)
        if "out" in args:
            args.out = Path(args.out) if args.out else None
        try:
            lines = list(body(load_run(args.run), args))
        except Skipped as why:
            print(f"{module}: nothing to show: {why}", file=sys.stderr)
            return 1
        for line in lines:
            print(line)
        return 0

    return run_main(module, run)
