"""Training methods, one file each; `METHODS` is the registry that sweeps and tables read."""

from __future__ import annotations

from sdkd_core.distillers.base import Distiller
from sdkd_core.distillers.vanilla import Vanilla
from sdkd_core.errors import unknown_choice

METHODS: dict[str, type[Distiller]] = {
    "vanilla": Vanilla,
}


def get_method(name: str) -> type[Distiller]:
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    return METHODS[name]


__all__ = ["METHODS", "Distiller", "get_method"]
