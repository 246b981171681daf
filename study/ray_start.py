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
    lines; everything else reaches the terminal unchanged, at once.

    Every Ray driver runs a thread that prints what the raylets and the GCS report to it, such
    as the raylet's "N PYTHON worker processes have been started ..." warning (which a sweep of
    Ray Train trials trips once about 4 x num_cpus + 8 workers are alive), a worker that died,
    or a task killed for lack of memory; lines it held back to deduplicate are printed from
    the main thread at shutdown. They go to stdout as "(raylet) ..." whatever `log_to_driver`
    says (that flag only stops the forwarding of workers' own output), and Ray has no setting
    for them nor for the warning's threshold. So the sweep's stdout sorts them itself: a line
    that starts with a cluster process's name in parentheses is held until it is complete and
    logged; any other text is written through as it comes.
    """

    def __init__(self, stream, logger: logging.Logger):
        self.stream, self.logger = stream, logger
        self.held: dict[int, str] = {}  # per thread: a cluster line being assembled
        self.at_line_start: dict[int, bool] = {}
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        passed = []
        with self.lock:
            ident = threading.get_ident()
            held, at_start = self.held.pop(ident, None), self.at_line_start.get(ident, True)
            for piece in text.splitlines(keepends=True):
                if held is not None:
                    held += piece
                elif at_start and CLUSTER_LINE.match(piece):
                    held = piece
                else:
                    passed.append(piece)
                at_start = piece.endswith("\n")
                if held is not None and at_start:
                    self.logger.warning(COLOUR.sub("", held.rstrip("\n")))
                    held = None
            if held is not None:
                self.held[ident] = held
            self.at_line_start[ident] = at_start
        if passed:
            self.stream.write("".join(passed))
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
