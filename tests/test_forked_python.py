"""The tests' forked commands (tests/forked_python.py) behave as `python ...` in a fresh
interpreter: the same exit status, streams, working folder and environment."""

import os
import subprocess
import sys

import pytest
from conftest import FORKED, ROOT

PROGRAMS = {
    "exit code": "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
    "exception": "raise ValueError('bad value')",
    "signal": "import os, signal; print('before', flush=True); "
              "os.kill(os.getpid(), signal.SIGKILL)",
    "exit message": "import sys; sys.exit('the message')",
    "interrupt": "raise KeyboardInterrupt",
    "atexit": "import atexit; atexit.register(print, 'at exit')",
    "thread joined": "import threading, time\n"
                     "threading.Thread(target=lambda: (time.sleep(0.2), print('joined'))).start()",
    "where": "import os, sys; print(os.getcwd(), os.environ['FORKED_TEST'], sys.argv[1:], "
             "os.environ.get('PYTHONPATH', '').split(os.pathsep)[0] in sys.path, "
             "sys.dont_write_bytecode)",
    "script": None,
}


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_forked_command_ends_as_a_fresh_interpreter_would(name, tmp_path):
    if name == "script":
        (tmp_path / "tool.py").write_text("import sys; print(sys.argv, __name__, sys.path[0])\n")
        args = [str(tmp_path / "tool.py"), "a", "b"]
    else:
        args = ["-c", PROGRAMS[name], "x", "y"]
    env = {**os.environ, "FORKED_TEST": "here", "PYTHONPATH": str(tmp_path / "plugins")}
    fresh = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    forked = FORKED.run(args, cwd=tmp_path, env=env, timeout=60)
    assert forked.returncode == fresh.returncode and forked.stdout == fresh.stdout
    if name in ("exception", "interrupt"):  # the traceback's frames differ, not its verdict
        assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
    else:
        assert forked.stderr == fresh.stderr


def test_a_forked_command_past_its_timeout_is_killed_and_the_next_one_runs(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        FORKED.run(["-c", "import time; print('started', flush=True); time.sleep(60)"],
                   cwd=ROOT, env=dict(os.environ), timeout=1)
    assert FORKED.run(["-c", "print('next')"], cwd=ROOT, env=dict(os.environ),
                      timeout=60).stdout == "next\n"
