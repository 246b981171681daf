"""Method configs: validated pydantic models, and `key=value` overrides with one-line errors."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sdkd_core.errors import UserError, unknown_choice


class MethodConfig(BaseModel):
    """Base of every method's config: unknown keys are errors, values are validated."""

    # nan and inf pass every bound pydantic checks (or slip past it, as inf past ge=0).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True,
                              allow_inf_nan=False)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.alias or name for name, f in cls.model_fields.items()]


def parse_value(text: str) -> Any:
    """`2` -> 2, `0.5` -> 0.5, `true` -> True, `live` -> 'live' (YAML scalars)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def build_config(
    method: str, config_cls: type[MethodConfig], values: dict[str, Any]
) -> MethodConfig:
    """Validate `values` (keys with or without the `method.` prefix) into `config_cls`."""
    known = config_cls.keys()
    clean: dict[str, Any] = {}
    for key, value in values.items():
        prefix, _, name = key.rpartition(".")
        if prefix and prefix != method:
            raise UserError(f"key '{key}' belongs to method '{prefix}', not '{method}'; "
                            f"{method} takes: {', '.join(f'{method}.{k}' for k in known)}")
        if name not in known:
            raise unknown_choice(f"{method} key", f"{method}.{name}",
                                 [f"{method}.{k}" for k in known])
        clean[name] = value
    try:
        return config_cls.model_validate(clean)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "?"
        given = clean.get(field, first.get("input"))
        raise UserError(f"{method}.{field}={given!r}: {first['msg']}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['sdkd.lambda=2', 'temperature=3'] -> {'sdkd.lambda': 2, 'temperature': 3}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set '{item}' is not key=value, e.g. --set sdkd.lambda=2")
        # 'lambda' and 'sdkd.lambda' are one setting: a second one would silently win.
        again = [k for k in out if k.rpartition(".")[2] == key.rpartition(".")[2]]
        if again:
            raise UserError(f"--set {key} repeats --set {again[0]}; set each key once")
        out[key] = parse_value(value.strip())
    return out
