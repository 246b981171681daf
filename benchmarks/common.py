"""What every benchmark reports: Markdown, the targets it checks, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --quick: the same space on little data and few epochs, a smoke run rather than a figure.
QUICK_OVERRIDES = {
    "dataset": {"n_train": 1000, "n_test": 1000},
    "recipe": {"epochs": 2},
    "teacher": {"epochs": 1, "n_train": 5000},
}


def quick_document(doc: dict) -> dict:
    """A space document with QUICK_OVERRIDES merged into its sections."""
    return {**doc, **{section: {**doc.get(section, {}), **values}
                      for section, values in QUICK_OVERRIDES.items()}}


def subject(base: dict) -> str:
    """A study document's first tuned method (`search.methods`): the one a search benchmark
    measures."""
    return ((base.get("search") or {}).get("methods") or ["sdkd"])[0]


def search_metric(doc: dict) -> str:
    """What the searchers see: the space's metric (val_acc where there is a split)."""
    given = (doc.get("search") or {}).get("metric")
    return given or ("val_acc" if doc["dataset"].get("val_split") is not None else "test_acc")


@dataclass
class Target:
    name: str
    measured: str
    goal: str
    reached: bool | None  # None: not measured here (e.g. no GPU)


@dataclass
class Result:
    markdown: str
    targets: list[Target] = field(default_factory=list)


def machine() -> str:
    """One line: CPU model and cores, torch threads and version, and the GPU if any."""
    import torch

    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    line = (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")
    if torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name()}"
    return line


def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
