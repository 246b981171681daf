"""The study object: a validated study file, the run folder it writes, and everything derived
from them, computed once and passed whole to every layer below: the dry run, the teachers, the
tuner, the searcher and ASHA, each trial (pickled by Tune), the summary, and study.json, which
the analysis reads instead of deriving anything again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdkd_core.distillers import get_method
from sdkd_core.errors import UserError
from sdkd_core.plugins import load_plugins, plugin_paths
from sdkd_core.recipe import Recipe
from sdkd_core.tasks import Task
from study.load import load_study_file
from study.plan import asha_grace_period, draws_per_method, plan
from study.runfolder import RunFolder
from study.runfolder.trials import PlannedTrial
from study.study_file import StudyFile
from study.teachers import TeacherSpec, default_cache_dir

RECORD_FORMAT = 1


@dataclass(frozen=True)
class Study:
    """One sweep: what it runs, where, and under which protocol. Immutable."""

    file: StudyFile
    folder: RunFolder
    cache_dir: str
    baselines: tuple[PlannedTrial, ...]  # every baseline on every pair and seed (--max-trials)
    draws: Mapping[str, int]  # drawn trials of each tuned method, the same for each
    first_rung: int | None  # ASHA's first rung in epochs (None: no ASHA, or nothing drawn)
    first_rung_note: str | None  # why it differs from search.grace_period, if it does
    teachers: Mapping[str, TeacherSpec]  # the pretrained teacher of each architecture
    plugin_paths: tuple[str, ...]  # where the study file's plugin modules were found
    limited: bool  # --max-trials: no confirming trials

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def subject(self) -> str:
        """The method the study is about: the first tuned method."""
        return self.file.tuned_methods[0]

    @property
    def tuned_methods(self) -> list[str]:
        return self.file.tuned_methods

    @property
    def metric(self) -> str:
        return self.file.metric

    @property
    def mode(self) -> str:
        return self.file.mode

    @property
    def task(self) -> Task:
        return self.file.task

    @property
    def search_seed(self) -> int:
        return self.file.search_seed

    @property
    def epochs(self) -> int:
        return self.file.recipe.epochs

    @property
    def n_drawn(self) -> int:
        return sum(self.draws.values())

    @property
    def executor(self) -> str:
        return self.file.resources.resolved_executor()

    def recipe_of(self, trial: PlannedTrial) -> Recipe:
        """The study's recipe under the trial's pair's own fields."""
        return Recipe(**{**self.file.recipe.model_dump(), **trial.recipe})

    def teacher_of(self, trial: PlannedTrial) -> TeacherSpec | None:
        return self.teachers.get(trial.teacher)

    def load_plugins(self) -> None:
        """Register the study file's own methods in this (fresh) trial or worker process."""
        load_plugins(self.file.plugins, self.plugin_paths)

    def worker_resources(self) -> dict[str, float]:
        """What each Ray Train worker of a trial holds."""
        r = self.file.resources
        per_worker = {"CPU": r.cpus_per_worker}
        if r.use_gpu:
            per_worker["GPU"] = (r.gpus_per_trial or r.num_workers) / r.num_workers
        return per_worker

    def trial_resources(self) -> dict[str, float]:
        """What Tune reserves for the trial process itself."""
        r = self.file.resources
        if self.executor == "in_trial":
            gpu = (r.gpus_per_trial or 1.0) if r.use_gpu else 0.0
            return {"cpu": r.cpus_per_worker, "gpu": gpu}
        # The trial only drives Ray Train's controller; the workers hold the real resources.
        # Tune refuses an empty request, and a token CPU share would leave a 2-CPU machine
        # 1.98 CPUs: one 1-CPU worker group too few. A mebibyte of memory is never short.
        return {"cpu": 0, "memory": 2**20}

    def record(self) -> dict[str, Any]:
        """study.json: the file and what the sweep derived from it."""
        return {
            "format": RECORD_FORMAT,
            "name": self.name,
            "space": self.file.model_dump(mode="json"),
            "subject": self.subject,
            "tuned_methods": self.tuned_methods,
            "baselines": list(self.file.baselines),
            "seeds": list(self.file.seeds),
            "search_seed": self.search_seed,
            "metric": self.metric,
            "mode": self.mode,
            "epochs": self.epochs,
            "draws": dict(self.draws),
            "asha_first_rung": self.first_rung,
            "executor": self.executor,
            # What a model of this study is built for and how its images are normalised; a
            # file dataset's class names (the analysis reads no image folder to learn them).
            "dataset_info": dataclasses.asdict(self.file.dataset.info()),
            "classes": list(files.classes) if (files := self.file.dataset.files()) else None,
        }


def make_study(file: StudyFile, folder: RunFolder, cache_dir: str | Path,
               max_trials: int | None = None) -> Study:
    """Everything derived from `file`, once."""
    baselines, n_drawn = plan(file, max_trials)
    draws = draws_per_method(file, n_drawn)
    first_rung, note = asha_grace_period(file) \
        if n_drawn and file.search.scheduler == "asha" else (None, None)
    # Absolute: Tune runs each trial in its own working directory.
    return Study(file=file, folder=RunFolder(folder.root.resolve()),
                 cache_dir=str(Path(cache_dir).resolve()),
                 baselines=tuple(baselines), draws=draws, first_rung=first_rung,
                 first_rung_note=note, teachers=teacher_specs(file),
                 plugin_paths=tuple(plugin_paths(file.plugins)),
                 limited=max_trials is not None)


def teacher_specs(file: StudyFile) -> dict[str, TeacherSpec]:
    """The teacher each pair's teacher architecture is pretrained as (or published as); none
    when no trained method needs a teacher's weights (DML's peer takes only its shape)."""
    if not any(get_method(m).needs_teacher and get_method(m).needs_teacher_weights
               for m in file.trained_methods()):
        return {}
    data = file.dataset.model_copy(update={"n_train": file.teacher.n_train})
    recipe = file.teacher.recipe_obj()
    return {arch: TeacherSpec(data, arch, recipe, checkpoint=file.teacher.checkpoints.get(arch))
            for arch in dict.fromkeys(p.teacher for p in file.pairs)}


def open_study(args) -> Study:
    """The study `args` name: a new one (`--space`) or the run folder's (`--resume`).

    A new study refuses a run folder that already holds one; a resumed one refuses a
    `--space` that differs from the run folder's copy."""
    gpu_here = not (args.dry_run or args.address)
    if args.resume:
        if args.output is None and args.space is None:
            raise UserError("--resume needs the run folder: pass --output DIR (or --space)")
        root = Path(args.output) if args.output else \
            Path("runs") / load_study_file(args.space, local_gpu_check=False).name
        folder = RunFolder(root)
        if not folder.space_yaml.exists():
            raise UserError(f"{root}: no sweep to resume here (no space.yaml); run without "
                            "--resume to start one")
        file = load_study_file(folder.space_yaml, local_gpu_check=gpu_here)
        if args.space is not None:
            given = load_study_file(args.space, local_gpu_check=False)
            # Tracking changes no trial: the given file's is taken, the rest must be the same.
            if given.model_dump(exclude={"tracking"}) != file.model_dump(exclude={"tracking"}):
                raise UserError(f"{args.space} differs from {folder.space_yaml}; resume "
                                "without --space, or start a new run with --output DIR")
            file = file.model_copy(update={"tracking": given.tracking})
        return make_study(with_flags(file, args), folder, args.cache_dir or default_cache_dir(),
                          args.max_trials)
    if args.space is None:
        raise UserError("--space is required, e.g. --space ablations.yaml")
    file = load_study_file(args.space, local_gpu_check=gpu_here, check_files=not args.dry_run)
    folder = RunFolder(Path(args.output) if args.output else Path("runs") / file.name)
    if folder.space_yaml.exists() and not args.dry_run:
        held = load_study_file(folder.space_yaml, local_gpu_check=False)
        if held.model_dump() != file.model_dump():
            raise UserError(f"{args.space}: --output {folder.root} holds a different sweep "
                            f"({held.name}); pass --output DIR for a new run folder")
        raise UserError(f"{folder.root} already holds this sweep; pass --resume to continue "
                        "it, or --output DIR for a new one")
    return make_study(with_flags(file, args), folder, args.cache_dir or default_cache_dir(),
                      args.max_trials)


def with_flags(file: StudyFile, args) -> StudyFile:
    """The study file with the sweep's tracking flags over its `tracking:` section (tracking
    changes no trial, so a resumed sweep may turn it on)."""
    mlflow, wandb = getattr(args, "mlflow", None), getattr(args, "wandb", None)
    if mlflow is None and wandb is None:
        return file
    return file.model_copy(update={"tracking": file.tracking.with_flags(mlflow, wandb)})
