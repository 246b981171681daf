"""Run a study described by one YAML space file, then its report.

    python study/sweep.py --space ablations.yaml

The sweep (study.orchestrate) writes results.csv, epochs.csv, optuna.db and space.yaml in the
run folder; the analysis package then builds the report from that folder alone.

A killed sweep continues with `--resume`: finished trials are kept, running ones continue from
their last epoch's checkpoint.
"""

from __future__ import annotations

import sys

from sdkd_core.cli import run_main
from study.interrupt import Interruption, SweepInterrupted
from study.orchestrate import run_sweep
from study.runfolder import RunFolder
from study.sweep_args import PROG, build_parser


def run_analysis(folder: RunFolder) -> str | None:
    """The run's HTML report; None when it failed (the sweep's results are safe either way)."""
    from analysis.report import build_report

    try:
        return str(build_report(folder.root))
    except Exception as err:  # noqa: BLE001 - the report is extra; say how to rebuild it
        print(f"warning: the report failed ({type(err).__name__}: {err}); rebuild it with "
              f"python -m analysis.report {folder.root}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interruption = Interruption()

    def body() -> int:
        outcome = run_sweep(args, interruption)
        if outcome is None:  # a dry run
            return 0
        report = None if args.no_report else run_analysis(outcome.folder)
        return outcome.finish(interruption, report)

    try:
        return run_main(PROG, body)
    except (SweepInterrupted, KeyboardInterrupt):
        # Before the trials (data, teachers) or at a second signal: nothing to finish.
        print(f"{PROG}: interrupted by {interruption.name() or 'SIGINT'} before any trial "
              "ran; run the same command again to start over", file=sys.stderr)
        return interruption.exit_code if interruption.signum else 130


if __name__ == "__main__":
    sys.exit(main())
