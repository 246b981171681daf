"""Reading a study file: parse, validate, check; every mistake one `UserError` line naming
the file, the key and the fix.

Distributions are checked against each method's own config, so a range the method would
reject is caught here, not in trial 37.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import torch
import yaml
from pydantic import ValidationError

from sdkd_core.errors import UserError, nearest
from sdkd_core.plugins import load_plugins
from study.checks import check_semantics
from study.study_file import StudyFile

MAX_FILE_BYTES = 1 << 20  # a study file is a page of YAML; anything bigger is a mistake
MAX_ALIASES = 100  # YAML aliases can expand a small file into an enormous document



def load_study_file(path: str | Path, local_gpu_check: bool = True,
                    check_files: bool = True) -> StudyFile:
    """Read, parse and validate a study file; any problem is one UserError line.

    `local_gpu_check=False` skips checking that this machine has the GPUs the space asks
    for: a plan (--dry-run) or a remote cluster (--address) does not need them here.
    `check_files=False` (a plan) reads no teacher checkpoint: the plan of an ImageNet study
    prints on a machine that has neither its images nor its weights.
    """
    path = Path(path)
    raw = _read(path)
    document = _parse_yaml(path, raw)
    try:
        space = StudyFile.model_validate(document)
    except ValidationError as err:
        raise UserError(f"{path}: {_describe(err)}") from None
    try:
        load_plugins(space.plugins)  # their methods are then known to every check below
    except UserError as err:
        raise UserError(f"{path}: plugins: {err}") from None
    space = _with_absolute_checkpoints(path, space)
    check_semantics(path, space, check_files)
    if local_gpu_check and space.resources.use_gpu and not torch.cuda.is_available():
        raise UserError(f"{path}: resources.use_gpu: true but no CUDA GPU is visible here; "
                        "set it to false, run on a GPU machine, or pass --address")
    return space


def _with_absolute_checkpoints(path: Path, space: StudyFile) -> StudyFile:
    """Checkpoint paths read from the space file's folder, kept absolute: the run folder's
    copy of the space (read on --resume) must name the same files."""
    found = {arch: str((path.parent / Path(p).expanduser()).resolve())
             for arch, p in space.teacher.checkpoints.items()}
    teacher = space.teacher.model_copy(update={"checkpoints": found})
    return space.model_copy(update={"teacher": teacher})


def _read(path: Path) -> str:
    if not path.exists():
        raise UserError(f"{path}: no such file; pass an existing space file with --space")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; pass a YAML space file with --space")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes is not a space file "
                        f"(limit {MAX_FILE_BYTES}); pass the YAML file that describes the study")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def _parse_yaml(path: Path, text: str) -> dict[str, Any]:
    try:
        events = yaml.parse(text, Loader=yaml.SafeLoader)
        aliases = sum(isinstance(e, yaml.AliasEvent) for e in events)
        if aliases > MAX_ALIASES:
            raise UserError(f"{path}: {aliases} YAML aliases (limit {MAX_ALIASES}); write the "
                            "values out instead of expanding anchors")
        document = yaml.safe_load(text)
        repeated = _repeated_key(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{path}: YAML syntax error{where}: {problem}") from None
    if repeated is not None:
        raise UserError(f"{path}: line {repeated.start_mark.line + 1}: key '{repeated.value}' "
                        "is given twice in one mapping (YAML keeps the last); keep one")
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        raise UserError(f"{path}: the file is {kind}; a space file is a mapping with at least "
                        "'name' and 'pairs'")
    return document


def _repeated_key(root: yaml.Node | None) -> yaml.ScalarNode | None:
    """The first key given twice in one mapping; each node is visited once, so anchors used
    many times cost nothing."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = [k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value != "<<"]
            for i, key in enumerate(keys):
                if any(key.value == k.value for k in keys[:i]):
                    return key
            stack += [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return None


def _describe(err: ValidationError) -> str:
    """The first validation error as `key: what is wrong (how to fix)`."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith(("function-", "tagged-union"))]
    # Drop the union tag pydantic inserts for discriminated distributions ('space.k.uniform.low').
    if len(loc) >= 3 and loc[0] == "space" and loc[2] in ("choice", "uniform", "loguniform", "int"):
        del loc[2]
    key = ".".join(loc) or "(top level)"
    kind, msg = first["type"], first["msg"]
    if kind == "extra_forbidden":
        section_keys = _known_keys(loc[:-1])
        hint = nearest(loc[-1], section_keys) if section_keys else None
        hint_text = f"; did you mean '{hint}'?" if hint else ""
        return f"unknown key '{key}'{hint_text} Known here: {', '.join(section_keys)}"
    if kind == "missing":
        return f"'{key}' is required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"{key}: 'type' must be one of choice, uniform, loguniform, int"
    if kind == "finite_number":
        return f"{key}: {first.get('input')} is not a finite number; write a number like 0.5"
    given = first.get("input")
    shown = f" (got {given!r})" if not isinstance(given, dict | list) else ""
    where = f"{key}: " if loc else ""  # a check across sections names its keys itself
    return f"{where}{msg.removeprefix('Value error, ')}{shown}"


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = StudyFile
    for part in loc:
        if part.isdigit():  # an item of a list: its type was taken with the list's
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _section_type(field.annotation)
    return list(getattr(model, "model_fields", {}))


def _section_type(annotation: Any) -> Any:
    """The section a field holds, through `list[...]` and `... | None`."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None
