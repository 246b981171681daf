"""Starting (or joining) Ray for a sweep, with Ray's own log lines in the run folder's ray.log
rather than the terminal."""

from __future__ import annotations

import logging
import re
import sys
import threading
from pathlib import Path

import ray

RAY_LOGGER = "ray"  # Ray's Python logger; start_ray points it at the run folder's ray.log
# What the driver prints for the cluster starts with the reporting process in parentheses,
# "(raylet) ..." or "(gcs_server) ...", after an optional colour code.
CLUSTER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)*\((raylet|gcs_server|autoscaler)\b")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class ClusterLinesToLog:
    """The sweep's stdout: lines the cluster reports to the driver go to ray.log as WARNING
    lines; everything else reaches the terminal unchanged.

    Every Ray driver runs a thread that prints what the raylets and the GCS report to it, such
    as the raylet's "N PYTHON worker processes have been started ..." warning (which a sweep of
    Ray Train trials trips once about 4 x num_cpus + 8 workers are alive), a worker that died,
    or a task killed for lack of memory. It prints them to stdout as "(raylet) ..." whatever
    `log_to_driver` says (that flag only stops the forwarding of workers' own output), and Ray
    has no setting for it nor for the warning's threshold. So the sweep's stdout sorts the lines
    itself: a line printed by a thread other than the main one is held until it is complete,
    then routed; the main thread's output (the sweep's own lines) passes straight through.
    """

    def __init__(self, stream, logger: logging.Logger):
        self.stream, self.logger = stream, logger
        self.pending: dict[int, str] = {}
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        if threading.current_thread() is threading.main_thread():
            return self.stream.write(text)
        with self.lock:
            ident = threading.get_ident()
            *lines, rest = (self.pending.pop(ident, "") + text).split("\n")
            if rest:
                self.pending[ident] = rest
        for line in lines:
            if CLUSTER_LINE.match(line):
                self.logger.warning(COLOUR.sub("", line))
            else:
                self.stream.write(line + "\n")
        return len(text)

    def __getattr__(self, name: str):  # flush, isatty, encoding, fileno, ...
        return getattr(self.stream, name)


def start_ray(address: str | None, num_cpus: int | None, num_gpus: int | None,
              log_file: Path) -> None:
    """Start (or join) Ray; Ray's own log lines go to `log_file`, not to the terminal."""
    ray_logger = logging.getLogger(RAY_LOGGER)
    for handler in list(ray_logger.handlers):
        ray_logger.removeHandler(handler)
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ray_logger.addHandler(to_file)
    ray_logger.propagate = False
    if not isinstance(sys.stdout, ClusterLinesToLog):
        sys.stdout = ClusterLinesToLog(sys.stdout, ray_logger)

    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False)
