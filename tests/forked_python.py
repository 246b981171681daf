"""`python args...` for the tests' commands, forked from one waiting interpreter that imported
the heavy dependencies (torch, Optuna, MLflow, pandas, matplotlib, the project) once.

A fresh interpreter spends about 2 s on this machine (more while the suite keeps both cores
busy) importing them before a script's first line, and the suite runs a project script some
hundred times. From the fork on, the process is the command's own: its arguments, working
folder, environment, standard streams and exit status (a death by signal N is -N, as
`subprocess` reports it), run as `__main__` and ended as Python ends (threads joined, atexit
handlers run). What differs from a fresh interpreter: modules imported before the fork took
their import-time settings from the session's environment, not the call's (the project reads
its own settings at run time), and a call's PYTHON* variables do not apply. Tests of signals and
one test per command line as a user types it start real interpreters.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Not Ray: it fixes settings read from the environment (RAY_AUTH_MODE, ...) when imported, and
# the commands import it at run time, after setting some of them.
PRELOAD = ["torch", "torchvision", "optuna", "pandas", "matplotlib", "mlflow", "study.sweep",
           "study.distill", "study.teachers", "study.export", "analysis.report",
           "analysis.gradcam"]

# The waiting interpreter: imports PRELOAD, then forks once per request line. The child leaves
# the loop and runs the command at the top level, so it exits exactly as `python` would.
SERVER = r"""
import importlib, json, os, runpy, sys, threading
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
# A fork copies one thread only: a thread started by an import would be missing in the child.
assert threading.active_count() == 1, threading.enumerate()
requests = sys.stdin.buffer

def serve():
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        print(pid, flush=True)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    sys.exit(0)

request = serve()
os.chdir(request["cwd"])
os.environ.clear()
os.environ.update(request["env"])
for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY),
                        (2, request["err"], os.O_WRONLY)):
    opened = os.open(path, flags)
    os.dup2(opened, fd)
    os.close(opened)
sys.stdin = open(0, closefd=False)
args = request["args"]
if args[0] == "-c":
    sys.argv, sys.path[0] = ["-c", *args[2:]], ""
    exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
elif args[0] == "-m":
    sys.argv, sys.path[0] = [args[1], *args[2:]], os.getcwd()
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
else:
    sys.argv, sys.path[0] = list(args), os.path.dirname(os.path.abspath(args[0]))
    runpy.run_path(args[0], run_name="__main__")
"""


class ForkedPython:
    """One waiting interpreter, started on first use; calls are taken one at a time."""

    def __init__(self, root: Path):
        self.root = root
        self.server: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.pending = b""

    def _start(self) -> subprocess.Popen:
        if self.server is None or self.server.poll() is not None:
            self.server = subprocess.Popen(
                [sys.executable, "-c", SERVER, json.dumps(PRELOAD)], cwd=self.root,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
            atexit.register(self.server.stdin.close)  # the server ends at its input's end
        return self.server

    def _line(self, deadline: float | None) -> str | None:
        """The server's next line, or None at the deadline."""
        while b"\n" not in self.pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.server.stdout], [], [], wait)[0]:
                return None
            chunk = os.read(self.server.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the forking interpreter ended ({self.server.wait()})")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float
            ) -> subprocess.CompletedProcess:
        """`python *args` in `cwd` with exactly `env`, as `subprocess.run(capture_output=True,
        text=True, timeout=timeout)` would run it."""
        with self.lock, tempfile.TemporaryDirectory(prefix="forked-") as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            out.touch()
            err.touch()
            server = self._start()
            server.stdin.write(json.dumps({"args": list(args), "cwd": str(cwd), "env": env,
                                           "out": str(out), "err": str(err)}).encode() + b"\n")
            pid = int(self._line(None))
            code = self._line(time.monotonic() + timeout)
            if code is None:  # as subprocess.run: kill the command, then raise
                os.kill(pid, signal.SIGKILL)
                self._line(None)
                raise subprocess.TimeoutExpired([sys.executable, *args], timeout,
                                                out.read_text(), err.read_text())
            return subprocess.CompletedProcess([sys.executable, *args], int(code),
                                               out.read_text(), err.read_text())


_servers: dict[Path, ForkedPython] = {}


def forked(root: Path) -> ForkedPython:
    """The session's one waiting interpreter for `root` (conftest is imported under two names)."""
    return _servers.setdefault(root, ForkedPython(root))
