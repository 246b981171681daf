"""Shared pieces of the sweep tests: a tiny space, the run-folder checks, killing a sweep."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conftest import ROOT, run_cli

TINY = """\
name: {name}
dataset: {{name: synthetic, n_train: 512, n_test: 256}}
recipe: {{epochs: {epochs}, batch_size: 32}}
teacher: {{epochs: 2}}
pairs:
  - {{teacher: resnet14, student: resnet8}}
baselines: {baselines}
seeds: [0]
search:
  num_samples: {samples}
  grace_period: 1
  reduction_factor: 2
space:
  sdkd.lambda: {{type: loguniform, low: 0.1, high: 10}}
  sdkd.ffb_depth: {{type: choice, values: [1, 2]}}
resources: {resources}
"""


def tiny_space(tmp_path: Path, name="tiny", epochs=3, baselines="[vanilla, kd]", samples=3,
               resources="{max_concurrent: 2}") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(name=name, epochs=epochs, baselines=baselines,
                                samples=samples, resources=resources))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sweep(*args: str, cache: Path, timeout: float = 600):
    return run_cli("study/sweep.py", *args, "--cache-dir", str(cache), timeout=timeout)



def check_run_folder(root: Path, epochs: int, expected_trials: int) -> list[dict[str, str]]:
    """The run-folder contract: one row per trial, one per trial and epoch, nothing twice."""
    results = read_csv(root / "results.csv")
    assert len(results) == expected_trials
    assert len({r["trial_id"] for r in results}) == expected_trials
    rows = read_csv(root / "epochs.csv")
    counts = Counter(r["trial_id"] for r in rows)
    assert len({(r["trial_id"], r["epoch"]) for r in rows}) == len(rows)
    for r in results:
        assert r["status"] in ("completed", "stopped"), r
        assert int(r["epochs"]) == counts[r["trial_id"]]
        assert sorted(int(x["epoch"]) for x in rows if x["trial_id"] == r["trial_id"]) == \
            list(range(1, int(r["epochs"]) + 1))
        if r["role"] == "baseline" or r["status"] == "completed":
            assert int(r["epochs"]) == epochs
    return results



def wait_for(predicate, timeout: float, what: str, proc=None, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            tail = proc.stderr.read()[-2000:] if proc.stderr else ""
            raise AssertionError(f"the process ended before {what}: {tail}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def sweep_killed_when(predicate, what: str, space: Path | None, run: Path, cache: Path) -> None:
    """Start a sweep (or resume the one in `run`, with space None) and SIGKILL it once
    `predicate()` holds."""
    start = ["--space", str(space)] if space is not None else ["--resume"]
    cmd = [sys.executable, "study/sweep.py", *start, "--output", str(run), "--cache-dir",
           str(cache)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(predicate, 300, what, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def sweep_killed_after_draw(name: str, space: Path, run: Path, cache: Path) -> None:
    """Run a sweep that SIGKILLs itself right after Optuna stored the draw named `name`,
    before Tune's next snapshot of the experiment (the fault-injection point of
    study.search)."""
    from study.search import KILL_AFTER_DRAW_ENV

    cmd = [sys.executable, "study/sweep.py", "--space", str(space), "--output", str(run),
           "--cache-dir", str(cache), "--no-report"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, KILL_AFTER_DRAW_ENV: name})
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def result_lines(run: Path, trial: str, experiment: str = "tune") -> list[dict]:
    path = run / experiment / trial / "result.json"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
