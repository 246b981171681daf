"""Ctrl-C and SIGTERM end a sweep cleanly, and say so.

While Tune runs, the first SIGINT or SIGTERM asks Tune to stop as it does on its own signal
(SIGUSR1): it saves the experiment's state one last time, and the sweep then writes the tables
and the report of what finished, prints one line with the `--resume` command, and exits with
128 + the signal's number (130, 143), so a script or a scheduler around it can tell an
interrupted sweep from a finished one. Outside Tune (data, teachers), or at a second signal,
it stops at once. Tune's own SIGINT handler is turned off (`TUNE_DISABLE_SIGINT_HANDLER`): its
resume hint names `Tuner.restore`, which is not how this project resumes.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading


class SweepInterrupted(Exception):
    """A signal arrived outside the Tune loop; nothing is left to finish."""


class Interruption:
    def __init__(self):
        self.signum: int | None = None
        self.fitting = False

    def install(self) -> None:
        """Take SIGINT and SIGTERM (again after ray.init, whose core installs its own)."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may take signals (a caller running main() in one)
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if first and self.fitting and callable(tune_handler):
            tune_handler(signum, frame)  # Tune ends its loop after this step
            return
        raise SweepInterrupted

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or 0)

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


def resume_command(output: str) -> str:
    """The exact command that continues this sweep."""
    return shlex.join(["python", "study/sweep.py", "--resume", "--output", output])
