"""Tasks, one file each; `TASKS` is the registry a dataset's `task` names.

Adding a task: write `tasks/<name>.py` with a `Task` subclass (`name`, `metric`, `lower_better`, its
losses, metrics and augmentation), then add one line to `TASKS`.
"""

from __future__ import annotations

from sdkd_core.errors import unknown_choice
from sdkd_core.tasks.base import CAPABILITIES, Task
from sdkd_core.tasks.classification import Classification
from sdkd_core.tasks.depth import Depth
from sdkd_core.tasks.segmentation import IGNORE, Segmentation

TASKS: dict[str, Task] = {
    "classification": Classification(),
    "segmentation": Segmentation(),
    "depth": Depth(),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise unknown_choice("task", name, TASKS)
    return TASKS[name]


def task_of(row) -> Task:
    """The task whose metric a row of results (an epoch's, a trial's) reports: the one whose
    `test_<metric>` it has (classification for a row with none)."""
    return next((t for t in TASKS.values() if f"test_{t.metric}" in row), TASKS["classification"])


__all__ = ["CAPABILITIES", "IGNORE", "TASKS", "Task", "get_task", "task_of"]
