import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import forked_python
import pytest

ROOT = Path(__file__).resolve().parents[1]
# One teacher cache for the real sweeps of a test session: a teacher of the same spec (the
# same data, architecture, recipe and seed) is trained once and loaded by the others, as the
# cache does for a researcher. Tests of the cache itself use caches of their own.
SWEEP_TEACHERS = Path(tempfile.mkdtemp(prefix="sdkd-test-teachers-"))
atexit.register(shutil.rmtree, SWEEP_TEACHERS, ignore_errors=True)


# Ray Train V2's controller hears of a worker's epoch at its next poll, every 2 s by default:
# the tests' epochs take under a second, so ASHA would judge a Ray Train trial at its rung
# after the trial had trained on. Its preemption watcher (an actor per run) guards cloud
# nodes, which the tests have none of. Set before any Ray starts, so its workers inherit both.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def free_port() -> int:
    """A port free a moment ago (the system's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session", autouse=True)
def shared_ray_head(tmp_path_factory):
    """One Ray head for the session's sweeps, which join it through RAY_ADDRESS (as `--address`)
    instead of each starting and stopping a Ray of its own: about 5 s a sweep. A test that
    needs a Ray of its own (its size, or its raylet's warnings) clears RAY_ADDRESS for it."""
    import signal
    import time

    port, client_port = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # socket paths must stay under 108 bytes
    log = open(tmp_path_factory.mktemp("ray-head") / "head.log", "w")  # noqa: SIM115
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # Token authentication, as every local `ray.init` sets up (it writes ~/.ray/auth_token,
    # which a sweep finds and then joins in token mode): the same head before and after.
    if not (Path.home() / ".ray" / "auth_token").exists():
        subprocess.run([ray_bin, "get-auth-token", "--generate"], capture_output=True,
                       check=True, env={**os.environ, "RAY_ADDRESS": ""})
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         # not Ray Client's default port, which a test's own head takes
         f"--ray-client-server-port={client_port}", f"--temp-dir={temp}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"})
    deadline = time.monotonic() + 120
    while not port_open(port):
        assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
        time.sleep(0.2)
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    yield os.environ["RAY_ADDRESS"]
    os.environ.pop("RAY_ADDRESS", None)
    head.send_signal(signal.SIGTERM)  # `ray start --block` stops its processes ...
    try:
        head.wait(5)
    except subprocess.TimeoutExpired:  # ... in half a minute: the suite is over, end them now
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


OWN_RAY = {"RAY_ADDRESS": ""}  # a subprocess's env: start a Ray of its own
# The session's commands fork from one interpreter that has imported the dependencies once.
FORKED = forked_python.forked(ROOT)


def init_ray(**kwargs) -> None:
    """`ray.init` of a local two-CPU Ray in the test's own process (whose Ray, imported at
    collection, took its settings before the session's head existed: it cannot join it)."""
    import ray

    address = os.environ.pop("RAY_ADDRESS", None)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", **kwargs)
    finally:
        if address is not None:
            os.environ["RAY_ADDRESS"] = address


@pytest.fixture(scope="session")
def fmnist_small():
    """A real 2,000 / 1,000-image stratified slice of Fashion-MNIST."""
    from sdkd_core.data import load_dataset

    return load_dataset("fashion_mnist", n_train=2000, n_test=1000, seed=0)


# Real Fashion-MNIST images written as a JPEG image folder (3 channels, 32x32): the streamed
# path's data in the tests. Written once per session, read only.
FASHION_FOLDER = Path(tempfile.mkdtemp(prefix="sdkd-test-fashion-folder-")) / "fashion"
atexit.register(shutil.rmtree, FASHION_FOLDER.parent, ignore_errors=True)


def fashion_folder() -> Path:
    """The session's Fashion-MNIST JPEG folder (train/ 2,000 images, val/ 500), written on
    first use."""
    if not (FASHION_FOLDER / "val").is_dir():
        from study.fashion_folder import write_fashion_folder

        tmp = FASHION_FOLDER.with_name("writing")
        write_fashion_folder(tmp, n_train=2000, n_test=500, size=32)
        tmp.rename(FASHION_FOLDER)
    return FASHION_FOLDER


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: tiny batches gain nothing from a second, and on a busy
    machine its synchronisation made such tests up to 100x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic():
    from sdkd_core.data import load_dataset

    return load_dataset("synthetic")


def assert_usage_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    """Bad input: exit code 2 and exactly one line on stderr that says what is wrong."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def assert_quick_usage_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    """A usage error (see above) found before any work: `main` returned within 10 s."""
    assert_usage_error(result, fragment)
    assert result.seconds < 10, result.seconds


def tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under root, with each file's size and modification time; Python's own
    bytecode cache (`__pycache__`, written where a module such as a plugin is imported) apart."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size,
                                                                p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}


# Runs `module.main(argv)` for each call in one fresh Python process: what the command line
# runs, with its exit code, stdout, stderr and the seconds `main` took (the imports apart),
# paying the imports once for many bad inputs.
MAINS_RUNNER = """
import contextlib, importlib, io, json, sys, time
results = []
for module, argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main = importlib.import_module(module).main
        start = time.monotonic()
        try:
            rc = main(argv)
        except SystemExit as exit:
            rc = exit.code
    results.append([rc, out.getvalue(), err.getvalue(), time.monotonic() - start])
print(json.dumps(results))
"""


def run_mains(calls: list[tuple[str, list[str]]],
              env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """`calls` as (module, argv) run by their `main` in one process (with `env` over this
    one's environment); a result per call, with the call's `seconds`."""
    proc = FORKED.run(["-c", MAINS_RUNNER, json.dumps(calls)], cwd=ROOT, timeout=600,
                      env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = []
    for (module, argv), (rc, out, err, seconds) in zip(calls, json.loads(
            proc.stdout.splitlines()[-1]), strict=True):
        results.append(subprocess.CompletedProcess([module, *argv], rc, out, err))
        results[-1].seconds = seconds
    return results


def run_cases_in_folders(tmp_path_factory, module: str, cases, argv_for):
    """{case index: (fresh folder, result)}: each (args, fragment) case of `cases` through
    `module`'s main, all in one process; `argv_for(folder, args)` builds the command line, in
    which `{file}` stands for an existing file (elsewhere) that must be left as it was."""
    files = tmp_path_factory.mktemp("files")
    (files / "a-file").write_text("not a folder\n")
    before = tree(files)
    folders = [tmp_path_factory.mktemp("case") for _ in cases]
    results = run_mains([(module, [a.replace("{file}", str(files / "a-file"))
                                   for a in argv_for(folder, args)])
                         for folder, (args, _) in zip(folders, cases, strict=True)])
    assert tree(files) == before
    return dict(enumerate(zip(folders, results, strict=True)))


def start_cli(*args: str, env: dict | None = None, cwd: Path = ROOT):
    """`python <script> args...` started (see run_cli), for a test that signals it: what the
    tests use of a `subprocess.Popen`, its output read once it has ended."""
    return FORKED.start(list(args), cwd=cwd, env={**os.environ, **(env or {})})


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path = ROOT,
            fresh: bool = False):
    """Run a project script as a user would: `python <script> args...` from the repository root
    (or from `cwd`, a script then given by its full path), forked from the session's waiting
    interpreter (tests/forked_python.py); `fresh`: in an interpreter of its own."""
    full_env = {**os.environ, **(env or {})}
    if not fresh:
        return FORKED.run(list(args), cwd=cwd, env=full_env, timeout=timeout)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


# A real small study: Ray Tune + Optuna + ASHA on synthetic data, four methods on two seeds and
# three drawn SDKD trials, ending with the analysis report. Shared by the sweep and analysis tests.
TINY_RUN = """\
name: tiny
dataset: {name: synthetic, n_train: 512, n_test: 256}
recipe: {epochs: 3, batch_size: 32}
teacher: {epochs: 2}
pairs:
  - {teacher: resnet14, student: resnet8}
baselines: [vanilla, kd, shake, sdkd]
seeds: [0, 1]
search:
  num_samples: 3
  grace_period: 1
  reduction_factor: 2
space:
  sdkd.lambda: {type: loguniform, low: 0.1, high: 10}
  sdkd.ffb_depth: {type: choice, values: [1, 2]}
resources: {max_concurrent: 2}
"""


def finished_sweep(base: Path, text: str, *flags: str) -> SimpleNamespace:
    """(space file, run folder, finished sweep process) of the space `text`, swept to its end
    under `base` with the session's teacher cache (and `flags`)."""
    space = base / "space.yaml"
    space.write_text(text)
    run = base / "run"
    result = run_cli("study/sweep.py", "--space", str(space), "--output", str(run),
                     "--cache-dir", str(SWEEP_TEACHERS), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return SimpleNamespace(space=space, run=run, result=result)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, shared_ray_head):
    """(space file, run folder, finished sweep process) of one real small sweep, joining the
    session's Ray head by --address (the other sweeps join it through RAY_ADDRESS)."""
    return finished_sweep(tmp_path_factory.mktemp("tiny-run"), TINY_RUN,
                          "--address", shared_ray_head)
