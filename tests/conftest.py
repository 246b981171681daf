import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fmnist_small():
    """A real 2,000 / 1,000-image stratified slice of Fashion-MNIST."""
    from sdkd_core.data import load_dataset

    return load_dataset("fashion_mnist", n_train=2000, n_test=1000, seed=0)


@pytest.fixture(scope="session")
def synthetic():
    from sdkd_core.data import load_dataset

    return load_dataset("synthetic")


def assert_usage_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    """Bad input: exit code 2 and exactly one line on stderr that says what is wrong."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def run_cli(*args: str, env: dict | None = None, timeout: float = 600):
    """Run a project script as a user would: `python <script> args...` from the repository root."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True,
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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(space file, run folder, finished sweep process) of one real small sweep."""
    base = tmp_path_factory.mktemp("tiny-run")
    space = base / "tiny.yaml"
    space.write_text(TINY_RUN)
    run = base / "run"
    result = run_cli("study/sweep.py", "--space", str(space), "--output", str(run),
                     "--cache-dir", str(base / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    return SimpleNamespace(space=space, run=run, result=result)
