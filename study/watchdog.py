"""Say so when a sweep stalls, instead of waiting silently.

A sweep stalls when trials are left but none reports: a Ray Train trial waits for workers that
the cluster cannot place (resources held elsewhere, a cluster smaller than a trial), or a trial
waits for a slot. After several times the slowest epoch seen so far (and at least
`SDKD_STALL_MIN_S` seconds, default 60) without a report, one line names the trials that wait and
what each waits for, and what the cluster has free. It repeats, at the same interval, while the
stall lasts.
"""

from __future__ import annotations

import os
import time

import ray
from ray.tune import Callback

from sdkd_core.cli import clock

STALL_FACTOR = 5  # times the slowest epoch seen so far
DEFAULT_STALL_MIN_S = 60.0


def stall_min_s() -> float:
    return float(os.environ.get("SDKD_STALL_MIN_S", DEFAULT_STALL_MIN_S))


def _fmt_resources(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU") and v}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}" if shown else "{}"


class StallWatchdog(Callback):
    def __init__(self, worker_resources: dict[str, float] | None, num_workers: int = 1):
        # Per Train worker, for Ray Train trials; None when trials train in their own process.
        self.worker_resources = worker_resources
        self.num_workers = num_workers
        self.last_event = time.monotonic()
        self.last_result_at: dict[str, float] = {}
        self.slowest_epoch = 0.0
        self.warned_at: float | None = None

    def _event(self) -> None:
        self.last_event = time.monotonic()
        self.warned_at = None

    def setup(self, **info):
        self._event()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.last_result_at[trial.trial_id] = time.monotonic()
        self._event()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        now = time.monotonic()
        since = self.last_result_at.get(trial.trial_id)
        if since is not None:
            self.slowest_epoch = max(self.slowest_epoch, now - since)
        self.last_result_at[trial.trial_id] = now
        self._event()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._event()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._event()

    def threshold_s(self) -> float:
        return max(stall_min_s(), STALL_FACTOR * self.slowest_epoch)

    def on_step_begin(self, iteration, trials, **info):
        left = [t for t in trials if t.status in ("PENDING", "RUNNING")]
        now = time.monotonic()
        limit = self.threshold_s()
        since = self.warned_at if self.warned_at is not None else self.last_event
        if not left or now - since < limit:
            return
        self.warned_at = now
        print(self.describe(left, now - self.last_event), flush=True)

    def describe(self, waiting, quiet_s: float) -> str:
        slowest = (f"{STALL_FACTOR}x the slowest epoch, {clock(self.slowest_epoch)}"
                   if self.slowest_epoch else "no epoch has finished yet")
        parts = []
        for t in waiting:
            name = t.config.get("trial_name", str(t))
            if t.status == "PENDING":
                need = t.placement_group_factory.required_resources
                parts.append(f"{name} waits for a trial slot {_fmt_resources(need)}")
            elif self.worker_resources is not None:
                parts.append(f"{name} waits for its Ray Train workers ({self.num_workers} x "
                             f"{_fmt_resources(self.worker_resources)})")
            else:
                parts.append(f"{name} is running but has not reported")
        return (f"stalled: no trial has reported for {clock(quiet_s)} (threshold "
                f"{clock(self.threshold_s())}: {slowest}); {'; '.join(parts)}; free "
                f"{self._free()}; see `ray status`, or lower resources.max_concurrent, "
                "cpus_per_worker or gpus_per_trial")

    @staticmethod
    def _free() -> str:
        free, total = ray.available_resources(), ray.cluster_resources()
        return ", ".join(f"{k} {free.get(k, 0):g} of {total.get(k, 0):g}"
                         for k in ("CPU", "GPU") if total.get(k))
