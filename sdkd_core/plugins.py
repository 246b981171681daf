"""Methods from a researcher's own modules: imported by name before anything is validated.

A plugin module registers its methods with `@sdkd_core.distillers.register`. It is found in the
working directory or on PYTHONPATH; `plugin_paths` says where, so Ray's worker processes (which
start elsewhere) import the very same files.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from sdkd_core.errors import UserError


def _importable_from_cwd() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_plugins(modules: list[str] | tuple[str, ...], paths: list[str] | tuple[str, ...] = ()
                 ) -> None:
    """Import each module (registering its methods); `paths` are searched first."""
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    _importable_from_cwd()
    for module in modules:
        try:
            importlib.import_module(module)
        except UserError as err:  # a registration refused by `register`
            raise UserError(f"plugin '{module}': {err}") from None
        except ModuleNotFoundError as err:
            if err.name is not None and module.startswith(err.name):
                raise UserError(f"plugin '{module}' not found: put {module.replace('.', '/')}"
                                ".py in the working directory or its folder on PYTHONPATH"
                                ) from None
            raise UserError(f"plugin '{module}' failed to import: {err}") from None
        except Exception as err:  # its own code failed: say where, in one line
            raise UserError(f"plugin '{module}' failed to import: "
                            f"{type(err).__name__}: {err}") from None


def plugin_paths(modules: list[str] | tuple[str, ...]) -> list[str]:
    """The sys.path entries the (already imported) plugin modules were found in."""
    paths = []
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).resolve().parent
        for _ in range(module.count(".") + (spec.origin.endswith("__init__.py"))):
            root = root.parent
        paths.append(str(root))
    return list(dict.fromkeys(paths))
