"""`python args...` for the tests' commands, forked from one waiting interpreter that imported
the heavy dependencies (torch, Optuna, MLflow, pandas, matplotlib, the project) once.

A fresh interpreter spends about 2 s on this machine (more while the suite keeps both cores
busy) importing them before a script's first line, and the suite runs a project script some
hundred times. From the fork on, the process is the command's own: its arguments, working
folder, environment, standard streams and exit status (a death by signal N is -N, as
`subprocess` reports it), run as `__main__` and ended as Python ends (threads joined, atexit
handlers run, streams flushed) but for the teardown of every module. What differs from a fresh
interpreter: modules imported before the fork took their import-time settings from the
session's environment, not the call's (the project reads its own settings at run time), and of
a call's PYTHON* variables only PYTHONPATH and PYTHONDONTWRITEBYTECODE apply. A test that reads
a command's output while it runs, and one test per command as a user types it
(`run_cli(..., fresh=True)`), start an interpreter of their own; tests/test_forked_python.py
holds the two kinds to the same results.
"""

from __future__ import annotations

import atexit
import io
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
import atexit, gc, importlib, json, os, runpy, signal, sys, threading
# The collector kept off, then the imported objects frozen out of its reach: otherwise each
# child's collections and its exit touch them all and copy the server's memory (1.6 s an exit).
gc.disable()
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
gc.freeze()
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
gc.enable()
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
sys.dont_write_bytecode = bool(request["env"].get("PYTHONDONTWRITEBYTECODE"))
# PYTHONPATH's folders go after the script's, as Python puts them at its start.
for entry in reversed(request["env"].get("PYTHONPATH", "").split(os.pathsep)):
    if entry and entry not in sys.path:
        sys.path.insert(1, entry)
try:
    if args[0] == "-c":
        sys.argv, sys.path[0] = ["-c", *args[2:]], ""
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    elif args[0] == "-m":
        sys.argv, sys.path[0] = [args[1], *args[2:]], os.getcwd()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv, sys.path[0] = list(args), os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")
    code = 0
except SystemExit as exit:
    code = 0 if exit.code is None else exit.code
    if not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
except BaseException as error:
    sys.excepthook(type(error), error, error.__traceback__)
    code = -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
# Python's exit, less the teardown of every module (half a second in a fork; nothing of the
# command's is left to it): threads joined, atexit handlers run, streams flushed.
threading._shutdown()
atexit._run_exitfuncs()
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except (OSError, ValueError):
        pass
if code == -signal.SIGINT:  # as Python ends on an uncaught KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
os._exit(code)
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

    def start(self, args: list[str], cwd: Path, env: dict) -> ForkedProcess:
        """`python *args` in `cwd` with exactly `env`, started; its output goes to files. The
        server takes the next call once this one has been waited for."""
        self.lock.acquire()
        try:
            tmp = tempfile.TemporaryDirectory(prefix="forked-")
            out, err = Path(tmp.name, "stdout"), Path(tmp.name, "stderr")
            out.touch()
            err.touch()
            server = self._start()
            server.stdin.write(json.dumps({"args": list(args), "cwd": str(cwd), "env": env,
                                           "out": str(out), "err": str(err)}).encode() + b"\n")
            pid = int(self._line(None))
        except BaseException:
            self.lock.release()
            raise
        return ForkedProcess(self, [sys.executable, *args], pid, tmp, out, err)

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float
            ) -> subprocess.CompletedProcess:
        """As `subprocess.run(capture_output=True, text=True, timeout=timeout)` would run it."""
        proc = self.start(args, cwd, env)
        try:
            out, err = proc.communicate(timeout)
        except subprocess.TimeoutExpired:  # as subprocess.run: kill the command, then raise
            proc.kill()
            raise subprocess.TimeoutExpired(proc.args, timeout, *proc.communicate()) from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class ForkedProcess:
    """What the tests use of `subprocess.Popen` (text output, read once it has ended)."""

    def __init__(self, server: ForkedPython, args: list[str], pid: int,
                 tmp: tempfile.TemporaryDirectory, out: Path, err: Path):
        self.server, self.args, self.pid, self.tmp = server, args, pid, tmp
        self.out, self.err = out, err
        self.returncode: int | None = None
        self.stdout = self.stderr = None

    def _reaped(self, deadline: float | None) -> int | None:
        if self.returncode is None:
            code = self.server._line(deadline)
            if code is not None:
                self.returncode = int(code)
                self.stdout = io.StringIO(self.out.read_text())
                self.stderr = io.StringIO(self.err.read_text())
                self.server.lock.release()
        return self.returncode

    def poll(self) -> int | None:
        return self._reaped(time.monotonic())

    def wait(self, timeout: float | None = None) -> int:
        code = self._reaped(None if timeout is None else time.monotonic() + timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout.getvalue(), self.stderr.getvalue()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and wait: the server takes no other call until this one is reaped."""
        self.send_signal(signal.SIGKILL)
        self.wait()


_servers: dict[Path, ForkedPython] = {}


def forked(root: Path) -> ForkedPython:
    """The session's one waiting interpreter for `root` (conftest is imported under two names)."""
    return _servers.setdefault(root, ForkedPython(root))
