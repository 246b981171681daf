"""Published CIFAR-100 top-1 accuracies of the pairs the literature runs (CRD, DKD and SHAKE
papers), shown under the tables of a CIFAR-100 run."""

from __future__ import annotations

import math

TEACHER = "teacher"

# Published CIFAR-100 top-1 (CRD / DKD / SHAKE papers), keyed by (teacher, student).
PUBLISHED = {
    ("resnet32x4", "resnet8x4"): {TEACHER: 79.42, "vanilla": 72.50, "KD": 73.33, "DKD": 76.32,
                                  "SHAKE": 77.35},
    ("wrn_40_2", "wrn_16_2"): {TEACHER: 75.61, "vanilla": 73.26, "KD": 74.92, "DKD": 76.23,
                               "SHAKE": 76.62},
    ("resnet56", "resnet20"): {TEACHER: 72.34, "vanilla": 69.06, "KD": 70.66, "DKD": 71.97,
                               "SHAKE": 72.04},
    ("resnet110", "resnet32"): {TEACHER: 74.31, "vanilla": 71.14, "KD": 73.08, "DKD": 74.11},
    ("vgg13", "vgg8"): {TEACHER: 74.64, "vanilla": 70.36, "KD": 72.98, "DKD": 74.68,
                        "SHAKE": 74.84},
    ("resnet32x4", "shufflev2"): {TEACHER: 79.42, "vanilla": 71.82, "KD": 74.45, "DKD": 77.07},
}


def published_number(dataset: str, teacher: str, student: str, key: str) -> float:
    """The published number of a column (`TEACHER` or a method's label), NaN if none."""
    if dataset != "cifar100":
        return math.nan
    return PUBLISHED.get((teacher, student), {}).get(key, math.nan)
