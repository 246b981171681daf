"""The schema of a study's space file, validated before anything runs.

Every mistake becomes one `UserError` line naming the file, the key and the fix. Distributions
are over dotted method keys (`sdkd.lambda`) and are checked against the method's own config, so
a range that the method would reject is caught here, not in trial 37.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import Field, ValidationError, model_validator

from sdkd_core.distributed import split_batch
from sdkd_core.errors import UserError, nearest
from sdkd_core.plugins import load_plugins
from sdkd_core.recipe import Recipe
from study.space_sections import (
    DatasetSection,
    Distribution,
    ModuleName,
    Pair,
    RecipeSection,
    Resources,
    SearchSection,
    Section,
    Seed,
    TeacherSection,
    overrides_of,
)

MAX_SPACE_BYTES = 1 << 20  # a space file is a page of YAML; anything bigger is a mistake
MAX_ALIASES = 100  # YAML aliases can expand a small file into an enormous document


class Space(Section):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    dataset: DatasetSection = DatasetSection()
    recipe: RecipeSection = RecipeSection()
    teacher: TeacherSection = TeacherSection()
    pairs: Annotated[list[Pair], Field(min_length=1)]
    baselines: list[str] = []
    # The researcher's own modules that register methods (imported before anything is checked).
    plugins: list[ModuleName] = []
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0]
    search: SearchSection = SearchSection()
    space: dict[str, Distribution] = {}
    resources: Resources = Resources()

    @model_validator(mode="after")
    def _batch_splits_among_workers(self):
        if self.recipe.batch_size >= 2:  # smaller ones are the recipe's own error
            split_batch(self.recipe.batch_size, self.resources.num_workers,
                        "recipe.batch_size", "resources.num_workers")
        return self

    def recipe_obj(self) -> Recipe:
        return Recipe(**self.recipe.model_dump())

    @property
    def tuned_methods(self) -> list[str]:
        """The methods the search tunes, in order; the first is the run's subject."""
        return list(self.search.methods) or [self.search.method]

    def keys_of(self, method: str) -> list[str]:
        """The `space` keys of `method`."""
        return [k for k in self.space if k.rpartition(".")[0] == method]

    def trained_methods(self) -> list[str]:
        """The methods some trial trains: the baselines, and the tuned methods when the
        space draws anything (a setting, or among several pairs)."""
        drawn = self.tuned_methods if self.space or len(self.pairs) > 1 else []
        return list(dict.fromkeys([*self.baselines, *drawn]))

    def pair_section(self, teacher: str, student: str) -> Pair:
        return next(p for p in self.pairs if (p.teacher, p.student) == (teacher, student))

    def pair_recipe(self, teacher: str, student: str) -> dict[str, Any]:
        """The recipe fields a pair changes (its `recipe:`), over the space's `recipe`."""
        return overrides_of(self.pair_section(teacher, student).recipe)

    def pair_settings(self, teacher: str, student: str, method: str) -> dict[str, Any]:
        """The pair's own settings of `method` (its `settings:` keys `<method>.*`)."""
        settings = self.pair_section(teacher, student).settings
        return {k: v for k, v in settings.items() if k.rpartition(".")[0] == method}

    @property
    def metric(self) -> str:
        """What the search maximises: `search.metric`, by default the validation accuracy
        when there is a validation split (the test set is then read only to report)."""
        if self.search.metric is not None:
            return self.search.metric
        return "val_acc" if self.dataset.val_split is not None else "test_acc"

    @model_validator(mode="after")
    def _one_way_to_name_the_tuned_methods(self):
        s = self.search
        if s.methods and s.method != s.methods[0]:
            raise ValueError(f"search: method {s.method} and methods {s.methods} disagree; "
                             "give search.methods alone (its first is the run's subject)")
        if len(set(s.methods)) != len(s.methods):
            raise ValueError(f"search.methods: {s.methods} has duplicates; list each once")
        return self

    @model_validator(mode="after")
    def _validation_metric_needs_a_split(self):
        metric = self.search.metric or ""
        if metric.startswith("val_") and self.dataset.val_split is None:
            raise ValueError(f"search.metric: {metric} needs validation images; set "
                             "dataset.val_split (e.g. 0.1) or use test_acc")
        return self

    @property
    def search_seed(self) -> int:
        """The seed of the drawn trials and of the sampler (default: the first seed)."""
        return self.seeds[0] if self.search.seed is None else self.search.seed


# ---------------------------------------------------------------- loading


def load_space(path: str | Path, local_gpu_check: bool = True) -> Space:
    """Read, parse and validate a space file; any problem is one UserError line.

    `local_gpu_check=False` skips checking that this machine has the GPUs the space asks
    for: a plan (--dry-run) or a remote cluster (--address) does not need them here.
    """
    path = Path(path)
    raw = _read(path)
    document = _parse_yaml(path, raw)
    try:
        space = Space.model_validate(document)
    except ValidationError as err:
        raise UserError(f"{path}: {_describe(err)}") from None
    from study.space_checks import check_semantics  # (it imports this module)

    try:
        load_plugins(space.plugins)  # their methods are then known to every check below
    except UserError as err:
        raise UserError(f"{path}: plugins: {err}") from None
    space = _with_absolute_checkpoints(path, space)
    check_semantics(path, space)
    if local_gpu_check and space.resources.use_gpu:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"{path}: resources.use_gpu: true but no CUDA GPU is visible here; "
                            "set it to false, run on a GPU machine, or pass --address")
    return space


def _with_absolute_checkpoints(path: Path, space: Space) -> Space:
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
    if path.stat().st_size > MAX_SPACE_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes is not a space file "
                        f"(limit {MAX_SPACE_BYTES}); pass the YAML file that describes the study")
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
    model: Any = Space
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
