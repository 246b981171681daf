"""Shared pieces of the sweep tests: a tiny space, the run-folder checks, killing a sweep."""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import time
from collections import Counter
from pathlib import Path

from conftest import run_cli, start_cli

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


def sweep(*args: str, cache: Path, timeout: float = 600, env: dict | None = None):
    return run_cli("study/sweep.py", *args, "--cache-dir", str(cache), timeout=timeout, env=env)



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
    proc = start_cli("study/sweep.py", *start, "--output", str(run), "--cache-dir", str(cache))
    try:
        wait_for(predicate, 300, what, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def sweep_killed_after_draw(name: str, space: Path, run: Path, cache: Path,
                            env: dict | None = None) -> None:
    """Run a sweep that SIGKILLs itself right after Optuna stored the draw named `name`,
    before Tune's next snapshot of the experiment (the fault-injection point of
    study.search)."""
    from study.search import KILL_AFTER_DRAW_ENV

    result = run_cli("study/sweep.py", "--space", str(space), "--output", str(run),
                     "--cache-dir", str(cache), "--no-report",
                     env={**(env or {}), KILL_AFTER_DRAW_ENV: name})
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


def mlflow_runs(run: Path, experiment: str):
    """(parent run, {trial name: child run}, client) of a sweep tracked in the MLflow store
    inside its run folder, read back through MLflow's own client; each trial once at most."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run.resolve() / 'tracking' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") ==
                parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    names = Counter(r.info.run_name for r in children)
    assert set(names.values()) == {1}, names  # no trial twice
    return parents[0], {r.info.run_name: r for r in children}, client


def assert_tracked(run: Path, experiment: str, metrics=("test_acc",)) -> None:
    """Every trial of results.csv is one MLflow child run with its identity and sampled
    parameters, every epoch of epochs.csv under each of `metrics` (step = epoch, once), its
    final numbers and status."""
    parent, children, client = mlflow_runs(run, experiment)
    results = read_csv(run / "results.csv")
    epochs = read_csv(run / "epochs.csv")
    assert sorted(children) == sorted(r["trial_id"] for r in results)
    for row in results:
        child = children[row["trial_id"]]
        params = child.data.params
        for key in ("role", "method", "teacher", "student", "seed"):
            assert params[key] == row[key], (key, params, row)
        sampled = [k for k in row if "." in k and row[k] != ""]
        assert {k: params[k] for k in sampled} == {k: row[k] for k in sampled}
        mine = [e for e in epochs if e["trial_id"] == row["trial_id"]]
        for metric in metrics:
            history = client.get_metric_history(child.info.run_id, metric)
            assert sorted((m.step, m.value) for m in history) == \
                [(int(e["epoch"]), float(e[metric])) for e in mine], (row["trial_id"], metric)
        assert child.data.tags["status"] == row["status"]
        assert child.info.status == ("FAILED" if row["status"] in ("diverged", "error")
                                     else "FINISHED")
        if row["status"] != "diverged":
            assert child.data.metrics["result.test_acc"] == float(row["test_acc"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == experiment
