"""Free the Ray Train workers' placement group of every trial that has ended.

A Ray Train trial is a Tune actor that owns a Train controller, which owns a placement group
for its workers. When Tune stops the trial (ASHA, the last epoch, an error, an interruption) it
ends the Tune actor, the controller dies with it, and the placement group stays: its placement
group is tied to the sweep's driver, not to the controller (ray-project/ray#54305). Ray's own
`PlacementGroupCleaner` removes it only where the dashboard's state API answers, which a local
`ray.init` without the dashboard, or a cluster started with `--include-dashboard=false`, lacks.
Without this the next trial's workers wait forever for resources that nobody holds.

So every Train worker of rank 0 records its placement group's id in the trial's Train folder
(`PLACEMENT_GROUP_FILE`), and this Tune callback, in the sweep's process, removes it once the
trial has ended and its Tune actor is gone (so no controller is left to start workers in it).
It keeps watching for a short while after that: a controller that was restarting its workers
at the moment of the stop may have created one more.
"""

from __future__ import annotations

import time
from pathlib import Path

from ray import PlacementGroupID
from ray.tune import Callback
from ray.util import get_current_placement_group
from ray.util.placement_group import (
    PlacementGroup,
    placement_group_table,
    remove_placement_group,
)

from sdkd_core.files import write_text

PLACEMENT_GROUP_FILE = "placement_group"
WATCH_AFTER_END_S = 10.0


def record_placement_group(folder: Path) -> None:
    """In a Train worker of rank 0: write the id of the placement group it runs in."""
    group = get_current_placement_group()
    if group is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / PLACEMENT_GROUP_FILE, group.id.hex())


def remove_if_alive(group_hex: str) -> bool:
    """Remove the placement group with this id unless it is gone already; True if removed."""
    try:
        group = PlacementGroup(PlacementGroupID(bytes.fromhex(group_hex)))
        state = placement_group_table(group).get("state")
    except (ValueError, TypeError):
        return False  # not an id of this cluster (a file from an earlier Ray session)
    if state in (None, "REMOVED"):
        return False
    remove_placement_group(group)
    return True


class TrainReaper(Callback):
    """Removes the worker placement group of each ended Ray Train trial (see the module doc)."""

    def __init__(self, train_dir: Path):
        self.train_dir = Path(train_dir)
        self.ended: dict[str, tuple[object, float | None]] = {}  # name -> (trial, actor gone at)
        self.removed: list[str] = []  # trial names whose group this callback removed

    def _end(self, trial) -> None:
        self.ended.setdefault(trial.config.get("trial_name"), (trial, None))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_step_begin(self, iteration, trials, **info):
        self.reap()

    def on_experiment_end(self, trials, **info):
        self.reap(final=True)

    def reap(self, final: bool = False) -> None:
        now = time.monotonic()
        for name, (trial, gone_at) in list(self.ended.items()):
            if trial.status not in ("TERMINATED", "ERROR"):
                del self.ended[name]  # restarted (a retry): it owns its workers again
                continue
            if gone_at is None:
                if trial.temporary_state.ray_actor is not None and not final:
                    continue  # the Tune actor (and so its controller) may still be running
                gone_at = now
                self.ended[name] = (trial, gone_at)
            marker = self.train_dir / name / PLACEMENT_GROUP_FILE
            if marker.exists() and remove_if_alive(marker.read_text().strip()):
                self.removed.append(name)
            if final or now - gone_at > WATCH_AFTER_END_S:
                del self.ended[name]
