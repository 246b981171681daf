"""Training methods, one file each; `METHODS` is the registry that sweeps and tables read.

Adding a method here: write `distillers/<name>.py` with a `Distiller` subclass (its `name`,
`label` and `Config`), then add one line to `METHODS`. A method in a researcher's own module
registers itself with `@register` instead (loaded by `plugins:` in a space file).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from sdkd_core.config import MethodConfig, build_config
from sdkd_core.distillers.at import AT
from sdkd_core.distillers.base import Distiller
from sdkd_core.distillers.crd import CRD
from sdkd_core.distillers.cwd import CWD
from sdkd_core.distillers.dist import DIST
from sdkd_core.distillers.dkd import DKD
from sdkd_core.distillers.dml import DML
from sdkd_core.distillers.fitnet import FitNet
from sdkd_core.distillers.kd import KD
from sdkd_core.distillers.mlkd import MLKD
from sdkd_core.distillers.reviewkd import ReviewKD
from sdkd_core.distillers.sdkd import SDKD
from sdkd_core.distillers.shake import Shake
from sdkd_core.distillers.vanilla import Vanilla
from sdkd_core.errors import UserError, unknown_choice
from sdkd_core.loader import BATCH_INPUTS
from sdkd_core.models import StagedNet
from sdkd_core.tasks import get_task

METHODS: dict[str, type[Distiller]] = {
    "vanilla": Vanilla,
    "kd": KD,
    "dml": DML,
    "shake": Shake,
    "dkd": DKD,
    "fitnet": FitNet,
    "at": AT,
    "dist": DIST,
    "mlkd": MLKD,
    "crd": CRD,
    "reviewkd": ReviewKD,
    "sdkd": SDKD,
    "cwd": CWD,
}


def contract_problem(cls: Any) -> str | None:
    """What keeps `cls` from being a method the platform can run, or None."""
    if not (inspect.isclass(cls) and issubclass(cls, Distiller)):
        return "is not a subclass of sdkd_core.distillers.Distiller"
    if not (isinstance(cls.name, str) and re.fullmatch(r"[a-z][a-z0-9_]*", cls.name)) \
            or cls.name == Distiller.name:
        return (f"has name {cls.name!r}; give it a `name` of lower-case letters, digits and _ "
                "(its settings are then <name>.<key>)")
    if not (isinstance(cls.label, str) and cls.label.strip()):
        return "has no `label`; give it the name tables and plots show, like label = \"KD\""
    if not (inspect.isclass(cls.Config) and issubclass(cls.Config, MethodConfig)):
        return "has a `Config` that is not a sdkd_core.config.MethodConfig subclass"
    if inspect.isabstract(cls):
        return "does not implement forward(x, y, epoch)"
    if cls.heads and cls.extra_network is Distiller.extra_network:
        return f"declares heads {list(cls.heads)} but does not build them in extra_network(key)"
    unknown = sorted(set(cls.batch_inputs) - set(BATCH_INPUTS))
    if unknown:
        return (f"asks for batch inputs {unknown}; the loader provides "
                f"{sorted(BATCH_INPUTS)}")
    bad = [k for k in cls.heads if not re.fullmatch(r"[a-z][a-z0-9_]*", k) or k == "student"]
    if bad:
        return f"has head keys {bad}; use lower-case identifiers other than 'student'"
    return None


def register(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator for a method in a researcher's own module: `@register` on a
    `Distiller` subclass with `name`, `label` and `Config` adds it to `METHODS`."""
    where = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"
    problem = contract_problem(cls)
    if problem:
        raise UserError(f"method class {where} {problem}")
    known = METHODS.get(cls.name)
    if known is not None and known is not cls:
        raise UserError(f"method name '{cls.name}' of {where} is taken by "
                        f"{known.__module__}.{known.__qualname__}; give one of them another "
                        "`name`")
    METHODS[cls.name] = cls
    return cls


def methods_for(task: str = "classification") -> list[str]:
    """The registered methods that can run on `task` (its outputs have what each requires)."""
    provides = get_task(task).provides
    return [name for name, cls in METHODS.items() if cls.requires <= provides]


def get_method(name: str) -> type[Distiller]:
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    return METHODS[name]


def method_config(name: str, values: dict[str, Any] | None = None) -> MethodConfig:
    """The validated config of method `name` from `{'sdkd.lambda': 2, ...}`."""
    cls = get_method(name)
    return build_config(name, cls.Config, values or {})


def build_distiller(name: str, student: StagedNet, teacher: StagedNet | None = None,
                    values: dict[str, Any] | None = None, task: str = "classification"
                    ) -> Distiller:
    cls, config, task_ = get_method(name), method_config(name, values), get_task(task)
    cls.check_task(config, task_)
    distiller = cls(student, teacher if cls.needs_teacher else None, config)
    distiller.task = task_
    return distiller


__all__ = ["METHODS", "Distiller", "build_distiller", "contract_problem", "get_method",
           "method_config", "methods_for", "register"]
