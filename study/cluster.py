"""Where a sweep's Ray runs: a local instance on loopback, or a cluster named by --address
(study/ray_start.py starts it). Nothing here imports Ray: a bad address is found first.

An address is checked before anything is written: a cluster that does not answer is one line
and exit code 2 within seconds, instead of a driver that waits for a minute printing Ray's C++
log lines into the terminal.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from sdkd_core.errors import UserError

ADDRESS_TIMEOUT_S = 15.0


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


def split_address(address: str, given: str = "--address") -> tuple[str, int]:
    """(host, port) of `host:port` or `ray://host:port`; a UserError line for anything else
    (`given`: where the address came from, --address or RAY_ADDRESS)."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{given} {address}: give the cluster's head as HOST:PORT, e.g. "
                        "10.0.0.5:6379 (the address `ray start --head` prints)")
    return host.strip("[]"), int(port)


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S,
                  given: str = "--address") -> None:
    """Fail fast, with one line, when nothing listens at the cluster's address."""
    if address == "auto":  # Ray's own look-up of a cluster started on this machine
        return
    host, port = split_address(address, given)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout_s)):
                return
        except OSError as err:
            reason = err.strerror or type(err).__name__
            refused = isinstance(err, ConnectionRefusedError)  # nothing listens: final
        if refused or time.monotonic() + 1.0 > deadline:
            raise UserError(f"{given} {address}: no Ray cluster answers there ({reason}); "
                            "start one with `ray start --head --port PORT` on that machine, "
                            f"or leave {given} out to start Ray here")
        time.sleep(1.0)
