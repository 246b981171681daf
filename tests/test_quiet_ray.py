"""Ray's own messages go to the run folder's ray.log, not to the terminal (study/ray_start.py)."""

import subprocess
import sys

import pytest
from conftest import ROOT

# A driver started the way sweep.py starts Ray, on 1 CPU, that holds enough actors for the
# raylet to warn "N PYTHON worker processes have been started" (4 x the startup concurrency of
# 1, plus the 8 IO workers Ray leaves out of the count). Ray's driver prints that warning as a
# "(raylet) ..." line whatever log_to_driver says.
DRIVER = """
import sys, time
from pathlib import Path
from study.cluster import ray_environment
from study.ray_start import start_ray

ray_environment(None)
log = Path(sys.argv[1])
start_ray(None, 1, 0, log)
import ray

@ray.remote(num_cpus=0)
class Idle:
    def ping(self):
        return 1

actors = [Idle.remote() for _ in range(14)]
ray.get([a.ping.remote() for a in actors])
deadline = time.monotonic() + 15
while "worker processes have been started" not in log.read_text() \\
        and time.monotonic() < deadline:
    time.sleep(0.2)
time.sleep(1.0)  # a second warning (5x, 6x...) would be on its way now
print("the driver's own line", flush=True)
ray.shutdown()
"""


@pytest.mark.slow  # ~15 s: a Ray instance and 14 actors
def test_raylet_warnings_go_to_ray_log_not_the_terminal(tmp_path):
    log = tmp_path / "ray.log"
    result = subprocess.run([sys.executable, "-c", DRIVER, str(log)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the driver's own line" in result.stdout
    terminal = result.stdout + result.stderr
    assert "(raylet)" not in terminal, terminal[-3000:]
    text = log.read_text()
    assert "(raylet) WARNING:" in text and "worker processes have been started" in text, text
