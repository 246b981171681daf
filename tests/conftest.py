import os
import subprocess
import sys
from pathlib import Path

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
