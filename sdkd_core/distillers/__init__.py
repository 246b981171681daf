"""Training methods, one file each; `METHODS` is the registry that sweeps and tables read.

Adding a method: write `distillers/<name>.py` with a `Distiller` subclass (and its `Config`),
then add one line below.
"""

from __future__ import annotations

from typing import Any

from sdkd_core.config import MethodConfig, build_config
from sdkd_core.distillers.at import AT
from sdkd_core.distillers.base import Distiller
from sdkd_core.distillers.dkd import DKD
from sdkd_core.distillers.dml import DML
from sdkd_core.distillers.fitnet import FitNet
from sdkd_core.distillers.kd import KD
from sdkd_core.distillers.sdkd import SDKD
from sdkd_core.distillers.shake import Shake
from sdkd_core.distillers.vanilla import Vanilla
from sdkd_core.errors import unknown_choice
from sdkd_core.models import StagedNet

METHODS: dict[str, type[Distiller]] = {
    "vanilla": Vanilla,
    "kd": KD,
    "dml": DML,
    "shake": Shake,
    "dkd": DKD,
    "fitnet": FitNet,
    "at": AT,
    "sdkd": SDKD,
}


def get_method(name: str) -> type[Distiller]:
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    return METHODS[name]


def method_config(name: str, values: dict[str, Any] | None = None) -> MethodConfig:
    """The validated config of method `name` from `{'sdkd.lambda': 2, ...}`."""
    cls = get_method(name)
    return build_config(name, cls.Config, values or {})


def build_distiller(name: str, student: StagedNet, teacher: StagedNet | None = None,
                    values: dict[str, Any] | None = None) -> Distiller:
    cls = get_method(name)
    return cls(student, teacher if cls.needs_teacher else None, method_config(name, values))


__all__ = ["METHODS", "Distiller", "build_distiller", "get_method", "method_config"]
