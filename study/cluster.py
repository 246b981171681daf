"""Where a sweep's Ray runs: a local instance on loopback, or a cluster named by --address.

An address is checked before anything is written: a cluster that does not answer is one line
and exit code 2 within seconds, instead of a driver that waits for a minute printing Ray's C++
log lines into the terminal.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import ray
import ray._private.worker as ray_worker

from sdkd_core.errors import UserError

ADDRESS_TIMEOUT_S = 15.0
RAY_LOGGER = "ray"  # Ray's Python logger; start_ray points it at the run folder's ray.log


def ray_environment(address: str | None) -> None:
    """Settings Ray reads when a sweep starts it (from the environment, at run time)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the monitor prints progress instead
    # Every epoch checkpoints, so Tune snapshots often; that is the point, not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune snapshots the experiment at most every 10 s by default; a sweep killed in between
    # resumes from the older snapshot and reruns trials that had ended. Every 2 s narrows that.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if address:
        # A cluster started by `ray start` checks tokens; a connecting driver sends its token
        # (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) only in token mode.
        token = (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                 or (Path.home() / ".ray" / "auth_token").exists())
        if token:
            os.environ.setdefault("RAY_AUTH_MODE", "token")


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of `host:port` or `ray://host:port`; a UserError line for anything else."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address}: give the cluster's head as HOST:PORT, e.g. "
                        "10.0.0.5:6379 (the address `ray start --head` prints)")
    return host.strip("[]"), int(port)


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """Fail fast, with one line, when nothing listens at the cluster's address."""
    if address == "auto":  # Ray's own look-up of a cluster started on this machine
        return
    host, port = split_address(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout_s)):
                return
        except OSError as err:
            reason = err.strerror or type(err).__name__
            refused = isinstance(err, ConnectionRefusedError)  # nothing listens: final
        if refused or time.monotonic() + 1.0 > deadline:
            raise UserError(f"--address {address}: no Ray cluster answers there ({reason}); "
                            "start one with `ray start --head --port PORT` on that machine, "
                            "or leave --address out to start Ray here")
        time.sleep(1.0)


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
