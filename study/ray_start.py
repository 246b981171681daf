"""Starting (or joining) Ray for a sweep, with Ray's own log lines in the run folder's ray.log
rather than the terminal."""

from __future__ import annotations

import logging
from pathlib import Path

import ray
import ray._private.worker as ray_worker

RAY_LOGGER = "ray"  # Ray's Python logger; start_ray points it at the run folder's ray.log


def _cluster_message_to_log(data: dict, ignore_prefix: bool) -> None:
    """Stands in for ray._private.worker.print_to_stdstream: what the cluster reports to the
    driver goes to ray.log as WARNING lines instead of the terminal."""
    logger = logging.getLogger(RAY_LOGGER)
    for line in data.get("lines", []):
        logger.warning("(%s) %s", data.get("pid", "ray"), line)


def route_cluster_messages_to_log() -> None:
    """Send the "(raylet) ..." lines a driver prints to ray.log.

    Every driver runs a thread (ray._private.worker.listen_error_messages) that prints what the
    raylets and the GCS report to it, such as the raylet's "N PYTHON worker processes have been
    started ..." warning (which a sweep of Ray Train trials trips once about 4 x num_cpus + 8
    workers are alive), a worker that died, or a task killed for lack of memory. It prints them
    to stdout as "(raylet) ..." through print_to_stdstream whatever log_to_driver says:
    log_to_driver only turns off the other thread, the one that forwards workers' output. Ray
    has no setting for that thread, and none for the warning's threshold (4 x the raylet's
    maximum startup concurrency, which is the CPU count; RAY_worker_maximum_startup_concurrency
    would raise it but also lets more workers start at once, and a cluster's raylets never see
    this process's environment). So the thread's printer is swapped for one that writes ray.log.
    """
    if hasattr(ray_worker, "print_to_stdstream"):
        ray_worker.print_to_stdstream = _cluster_message_to_log


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
    route_cluster_messages_to_log()  # before ray.init, which starts the thread that prints them

    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False)
