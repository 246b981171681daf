"""Published scores of the pairs the literature runs, shown under the tables of a run on the
same dataset: top-1 on CIFAR-100 (the CRD, DKD, SHAKE, ReviewKD, DIST and MLKD papers) and
ImageNet (DKD's and MLKD's papers, mdistiller's README); mIoU on Cityscapes (CIRKD's README)."""

from __future__ import annotations

import math

TEACHER = "teacher"

# Published CIFAR-100 top-1, keyed by (teacher, student). Sources: CRD's paper (Tables 1-2:
# teacher, vanilla, KD, CRD), DKD's and SHAKE's papers, DIST's README (hunto/DIST_KD), MLKD's
# paper as quoted by sunshangquan/logit-standardization-KD's README (MLKD+LS, a setting here, is
# 78.28 / 76.95 / 72.33 / 74.32 / 75.22 / 78.76 in the order below), ReviewKD's paper and
# mdistiller's README. CRD+KD (crd.kd_weight=1): 75.46 / 75.64 / 71.63 / 73.75 / 74.29 / 76.05.
PUBLISHED = {
    ("resnet32x4", "resnet8x4"): {TEACHER: 79.42, "vanilla": 72.50, "KD": 73.33, "DKD": 76.32,
                                  "SHAKE": 77.35, "CRD": 75.51, "ReviewKD": 75.63,
                                  "DIST": 76.31, "MLKD": 77.08},
    ("wrn_40_2", "wrn_16_2"): {TEACHER: 75.61, "vanilla": 73.26, "KD": 74.92, "DKD": 76.23,
                               "SHAKE": 76.62, "CRD": 75.48, "ReviewKD": 76.12, "MLKD": 76.63},
    ("resnet56", "resnet20"): {TEACHER: 72.34, "vanilla": 69.06, "KD": 70.66, "DKD": 71.97,
                               "SHAKE": 72.04, "CRD": 71.16, "ReviewKD": 71.89, "DIST": 71.75,
                               "MLKD": 72.19},
    ("resnet110", "resnet32"): {TEACHER: 74.31, "vanilla": 71.14, "KD": 73.08, "DKD": 74.11,
                                "CRD": 73.48, "ReviewKD": 73.89, "MLKD": 74.11},
    ("vgg13", "vgg8"): {TEACHER: 74.64, "vanilla": 70.36, "KD": 72.98, "DKD": 74.68,
                        "SHAKE": 74.84, "CRD": 73.94, "ReviewKD": 74.84, "MLKD": 75.18},
    ("resnet32x4", "ShuffleV2"): {TEACHER: 79.42, "vanilla": 71.82, "KD": 74.45, "DKD": 77.07,
                                  "CRD": 75.65, "ReviewKD": 77.78, "DIST": 77.35,
                                  "MLKD": 78.44},
}


# Published ImageNet top-1 (val), torchvision's recipe, torchvision's teachers. Sources:
# DKD's paper (teacher, student) and mdistiller's README (KD and DKD as mdistiller trains them).
# MLKD+LS (a setting here) is 72.08 on ResNet-34 -> ResNet-18 (logit-standardization-KD).
PUBLISHED_IMAGENET = {
    ("resnet34", "resnet18"): {TEACHER: 73.31, "vanilla": 69.75, "KD": 71.03, "DKD": 71.70},
    ("resnet50", "MobileNetV1"): {TEACHER: 76.16, "vanilla": 68.87, "KD": 70.50, "DKD": 72.05},
}

# Published Cityscapes val mIoU (%), DeepLabV3 at output stride 8, 512x1024 crops, 40k
# iterations (winycg/CIRKD's README: its own runs of SKD, IFVD, CWD, CIRKD; DIST from its paper).
# Cityscapes' val split is the test set here (its test labels are withheld).
PUBLISHED_CITYSCAPES = {
    ("deeplabv3_resnet101", "deeplabv3_resnet18"): {
        TEACHER: 78.07, "vanilla": 74.21, "SKD": 75.42, "IFVD": 75.59, "CWD": 75.55,
        "CIRKD": 76.38, "DIST": 77.10},
}
TABLES = {"cifar100": PUBLISHED, "imagenet": PUBLISHED_IMAGENET,
          "cityscapes": PUBLISHED_CITYSCAPES}


def published_number(dataset: str, teacher: str, student: str, key: str) -> float:
    """The published number of a column (`TEACHER` or a method's label), NaN if none."""
    return TABLES.get(dataset, {}).get((teacher, student), {}).get(key, math.nan)
