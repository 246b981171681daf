"""The parts of a space file's schema: its sections and the distributions the search draws from.

`study.space.Space` puts them together into the whole file.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    create_model,
    model_validator,
)

from sdkd_core.data import ImageData, file_info, list_files, load_dataset, sized_info
from sdkd_core.datasets import DATASET_INFO, DatasetInfo
from sdkd_core.dense_files import DenseFiles
from sdkd_core.file_data import FileSplits
from sdkd_core.image_files import FileDataset
from sdkd_core.recipe import MAX_SEED, TEACHER_EPOCHS, Recipe
from study.streaming import StreamedData


class Section(BaseModel):
    # nan and inf are refused in every float field: they pass (or slip past) pydantic's bounds.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class DatasetSection(Section):
    """Which images, and how many: each field is an argument of `sdkd_core.data.load_dataset`,
    so a new dataset option is one field here and its use there."""

    name: str = "fashion_mnist"
    root: str | None = None
    n_train: Annotated[int, Field(gt=0)] | None = None
    n_test: Annotated[int, Field(gt=0)] | None = None
    # Validation images held out of the training images: a fraction, or a count (an int).
    val_split: Annotated[float, Field(gt=0, lt=1), Strict()] | Annotated[int, Field(gt=0)] \
        | None = None
    # Datasets of files only (those with a `layout` in sdkd_core.datasets); None: the dataset's.
    image_size: Annotated[int, Field(ge=8)] | None = None  # the views' side (dense: height)
    crop: Literal["pad", "resized"] | None = None  # training crop (sdkd_core.datasets)
    pad: Annotated[int, Field(ge=0)] | None = None  # padding of the `pad` crop, in pixels
    stream: bool | None = None  # None: sdkd_core.file_data's rule
    decode_cpus: Annotated[float, Field(gt=0)] = 1.0  # CPUs of each Ray Data decoding task
    _files: FileDataset | DenseFiles | None = PrivateAttr(default=None)

    def files(self) -> FileDataset | DenseFiles | None:
        """A file dataset's listing, made once (before Ray starts) and carried with the study
        object to every trial; None for the other datasets."""
        info = DATASET_INFO.get(self.name)
        if info is None or not info.from_files:
            return None
        if self._files is None:
            self._files = list_files(info.layout, self.root)
        return self._files

    def info(self, listed: bool = True) -> DatasetInfo:
        """What the models and loaders need to know: the table's, with a file dataset's
        classes and counts from its files (`listed=False`: the table's counts, for a plan that
        must not read files) and its size, crop and padding as set here."""
        base = DATASET_INFO[self.name]
        if not base.from_files:
            return sized_info(base, self.image_size)
        files = self.files() if listed or base.layout == "imagefolder" else None
        return file_info(base, files, self.image_size, self.crop, self.pad)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the images apart from where they are: a file dataset's classes and
        files (a teacher's cache key)."""
        fields = self.model_dump(exclude={"root", "decode_cpus"})
        for key in ("image_size", "crop", "pad", "stream"):  # unset: the keys of before
            if fields[key] is None:
                del fields[key]
        files = self.files()
        if files is not None:
            fields["files_sha256"] = files.sha256
        return fields

    def load(self, seed: int) -> ImageData | StreamedData:
        """The images, subsets drawn with `seed`: in memory, or files to stream."""
        data = load_dataset(**self.model_dump(exclude={"decode_cpus"}), seed=seed,
                            files=self.files())
        return StreamedData(data, self.decode_cpus) if isinstance(data, FileSplits) else data


# The students' recipe: the fields, types and defaults of `sdkd_core.recipe.Recipe` itself.
_RECIPE_TYPES = get_type_hints(Recipe)
RecipeSection = create_model(
    "RecipeSection", __base__=Section,
    **{f.name: (_RECIPE_TYPES[f.name], f.default) for f in dataclasses.fields(Recipe)},
)


# Some fields of a recipe, each over the recipe it amends (a pair's over `recipe`, the teachers'
# over the default teacher recipe); unset fields are None.
RecipeOverrides = create_model(
    "RecipeOverrides", __base__=Section,
    **{f.name: (_RECIPE_TYPES[f.name] | None, None) for f in dataclasses.fields(Recipe)},
)


def overrides_of(section: BaseModel | None) -> dict[str, Any]:
    """The fields a `RecipeOverrides` sets."""
    if section is None:
        return {}
    return {k: v for k, v in section.model_dump().items() if v is not None}


class TeacherSection(Section):
    """How teachers are pretrained (once, cached), or which published checkpoints to use."""

    epochs: Annotated[int, Field(gt=0)] | None = None  # shorthand for recipe.epochs
    n_train: Annotated[int, Field(gt=0)] | None = None
    recipe: RecipeOverrides | None = None  # over Recipe(epochs=TEACHER_EPOCHS)
    # {architecture: checkpoint file}: published teachers used instead of training one;
    # relative paths are read from the space file's folder.
    checkpoints: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_epochs(self):
        given = overrides_of(self.recipe).get("epochs")
        if self.epochs is not None and given is not None and given != self.epochs:
            raise ValueError(f"teacher.epochs {self.epochs} and teacher.recipe.epochs {given} "
                             "disagree; give the epochs once, in teacher.recipe")
        return self

    def recipe_obj(self) -> Recipe:
        """The teachers' whole recipe."""
        return Recipe(**{**Recipe(epochs=self.epochs or TEACHER_EPOCHS).to_dict(),
                         **overrides_of(self.recipe)})


class Pair(Section):
    teacher: str
    student: str
    # This pair's own protocol: recipe fields over `recipe` (all but epochs), and method
    # settings (`dkd.beta: 2`) for every trial of that method on this pair.
    recipe: RecipeOverrides | None = None
    settings: dict[str, Any] = {}


class SearchSection(Section):
    # The tuned methods, each with the same budget (sampler, seed, num_samples, ASHA): its
    # own Optuna study over its own `space.<method>.*` keys. The first is the run's subject.
    methods: Annotated[list[str], Field(min_length=1)] = ["sdkd"]

    @model_validator(mode="before")
    @classmethod
    def _one_way_to_name_them(cls, data):
        if isinstance(data, dict) and "method" in data:
            raise ValueError(f"write methods: [{data['method']}] instead of method: "
                             f"{data['method']} (search.methods is a list; its first is the "
                             "run's subject)")
        return data

    @model_validator(mode="after")
    def _each_once(self):
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"search.methods: {self.methods} has duplicates; list each once")
        return self

    seed: Seed | None = None
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    num_samples: Annotated[int, Field(gt=0)] = 8
    # What Optuna and ASHA optimise: the task's metric (top-1, mIoU, RMSE) on the validation
    # images where the data holds a split, else on the test images (None: that default). Any
    # `<val|test>_<metric>[_best]` of the task's metrics may be named.
    metric: str | None = None
    mode: Literal["max", "min"] | None = None  # None: the way the task's metric is better
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: Annotated[int, Field(gt=0)] = 2
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0
    # The best drawn configurations of each pair, run again on the other seeds after the search.
    confirm_top: Annotated[int, Field(ge=0)] = 1


class Choice(Section):
    type: Literal["choice"]
    values: Annotated[list[Any], Field(min_length=1)]

    @model_validator(mode="after")
    def _finite_and_distinct(self):  # values may be of any type, so the config's check misses them
        for i, value in enumerate(self.values):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"values: {value} is not a finite number; give numbers like 0.5")
            if value in self.values[:i]:
                raise ValueError(f"values: {value!r} is listed twice; list each value once")
        return self


class Uniform(Section):
    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low={self.low} must be below high={self.high}")
        return self


class LogUniform(Uniform):
    type: Literal["loguniform"]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _positive(self):
        if self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got low={self.low}")
        return self


class IntRange(Section):
    type: Literal["int"]
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise ValueError(f"low={self.low} must not exceed high={self.high}")
        return self


Distribution = Annotated[Choice | Uniform | LogUniform | IntRange, Field(discriminator="type")]


class Resources(Section):
    num_workers: Annotated[int, Field(gt=0)] = 1
    use_gpu: bool = False
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    gpus_per_trial: Annotated[float, Field(ge=0)] = 0.0
    max_concurrent: Annotated[int, Field(gt=0)] = 1
    max_failures: Annotated[int, Field(ge=0)] = 1
    executor: Literal["auto", "in_trial", "ray_train"] = "auto"
    compile: bool = False  # torch.compile each trial's training step
    # BatchNorm statistics over the global batch rather than each worker's share.
    sync_batchnorm: bool = False

    @model_validator(mode="after")
    def _gpus_need_use_gpu(self):
        if self.gpus_per_trial > 0 and not self.use_gpu:
            raise ValueError(f"gpus_per_trial={self.gpus_per_trial:g} needs use_gpu: true; "
                             "set use_gpu: true or drop gpus_per_trial")
        if self.sync_batchnorm and not self.use_gpu:  # torch's SyncBatchNorm runs on GPUs only
            raise ValueError("sync_batchnorm: true needs use_gpu: true (torch's SyncBatchNorm "
                             "runs on GPUs only); set use_gpu: true or drop sync_batchnorm")
        return self

    def resolved_executor(self) -> str:
        """Single-worker CPU trials run in the Tune trial itself: a TorchTrainer costs ~20 s."""
        if self.executor != "auto":
            return self.executor
        return "in_trial" if self.num_workers == 1 and not self.use_gpu else "ray_train"


ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")]
