"""Teacher pretraining with a content-addressed cache.

A teacher is identified by a hash of (dataset, subset sizes, architecture, recipe, seed). Its
weights are a state_dict (loaded with weights_only=True) next to a JSON card with the recipe,
the test accuracy and the weights' SHA-256, so a truncated or tampered file is noticed and the
teacher retrained. A sweep asks the cache and never trains the same teacher twice.

    python study/teachers.py --dataset fashion_mnist --arch resnet20 --epochs 8 --n-train 10000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from sdkd_core.cli import OneLineParser, run_main
from sdkd_core.distillers import Distiller, build_distiller
from sdkd_core.engine import Engine
from sdkd_core.errors import unknown_choice
from sdkd_core.files import atomic_write, file_sha256, write_json
from sdkd_core.models import MODEL_NAMES, StagedNet, build_model
from sdkd_core.models.published import load_teacher_checkpoint
from sdkd_core.recipe import TEACHER_EPOCHS, Recipe
from sdkd_core.tasks import task_of
from study.cli import (
    add_data_args,
    add_recipe_args,
    add_runtime_args,
    check_common,
    data_section,
    progress_line,
    recipe_from_args,
)
from study.sections import DatasetSection

CACHE_FORMAT = 4  # bump when the meaning of a cached file changes (4: the WRN closing BN moved)
WAIT_LOG_S = 30.0  # while another process trains the teacher, say so this often


def default_cache_dir() -> Path:
    return Path(os.environ.get("SDKD_CACHE", Path.home() / ".cache" / "sdkd"))


@dataclass(frozen=True)
class TeacherSpec:
    """Everything that determines a teacher's weights: its images (`data`, whose root is not
    part of the identity), architecture, recipe and seed.

    With `checkpoint`, a published teacher's file (this project's format or RepDistiller's):
    its weights are that file's, whatever the recipe, and "training" it is converting it and
    measuring its test accuracy once."""

    data: DatasetSection
    arch: str
    recipe: Recipe = field(default_factory=lambda: Recipe(epochs=TEACHER_EPOCHS))
    seed: int = 0
    checkpoint: str | None = None

    def __post_init__(self):
        if self.arch not in MODEL_NAMES:
            raise unknown_choice("model", self.arch, MODEL_NAMES)

    @property
    def dataset(self) -> str:
        return self.data.name

    @cached_property
    def _checkpoint_sha256(self) -> str:
        return file_sha256(Path(self.checkpoint))

    def identity(self) -> dict[str, Any]:
        if self.checkpoint is not None:
            return {"format": CACHE_FORMAT, "dataset": self.dataset, "n_test": self.data.n_test,
                    "arch": self.arch, "checkpoint_sha256": self._checkpoint_sha256}
        return {"format": CACHE_FORMAT, "data": self.data.fingerprint(),
                "arch": self.arch, "recipe": self.recipe.to_dict(), "seed": self.seed}

    @property
    def key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return f"{self.dataset}-{self.arch}-{hashlib.sha256(blob).hexdigest()[:16]}"


class TeacherCache:
    """Teachers under `<cache_dir>/teachers/<key>.pt` with a card `<key>.json`."""

    def __init__(self, cache_dir: str | Path | None = None):
        self.root = Path(cache_dir or default_cache_dir()) / "teachers"

    def paths(self, spec: TeacherSpec) -> tuple[Path, Path]:
        return self.root / f"{spec.key}.pt", self.root / f"{spec.key}.json"

    def lock_path(self, spec: TeacherSpec) -> Path:
        return self.root / f"{spec.key}.lock"

    def load(self, spec: TeacherSpec, warn: bool = True
             ) -> tuple[StagedNet, dict[str, Any]] | None:
        """The cached teacher in eval mode, or None when absent or damaged (with a warning
        unless `warn` is False)."""
        weights, card_path = self.paths(spec)
        if not card_path.exists():
            return None
        try:
            card = json.loads(card_path.read_text())
            if card.get("identity") != spec.identity():
                raise ValueError("its card describes another teacher")
            if not weights.exists() or file_sha256(weights) != card["weights_sha256"]:
                raise ValueError("the weights file is missing or does not match its recorded hash")
            model = build_model(spec.arch, card["num_classes"], card["in_channels"])
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as err:  # noqa: BLE001 - any damage means: retrain
            if warn:
                print(f"warning: cached teacher {spec.key} is unusable ({err}); retraining it",
                      file=sys.stderr)
            return None
        model.eval().requires_grad_(False)
        return model, card

    def save(self, spec: TeacherSpec, model: StagedNet, card: dict[str, Any]) -> dict[str, Any]:
        """Write weights, then the card naming their hash; the card's presence marks completion."""
        self.root.mkdir(parents=True, exist_ok=True)
        weights, card_path = self.paths(spec)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        buffer = io.BytesIO()  # saved by name, the archive would hold the temporary file's name
        torch.save(state, buffer)
        atomic_write(weights, lambda p: p.write_bytes(buffer.getvalue()))
        card = {**card, "identity": spec.identity(), "key": spec.key,
                "weights": weights.name, "weights_sha256": file_sha256(weights)}
        write_json(card_path, card)
        return card

    def get(
        self,
        spec: TeacherSpec,
        data=None,
        device: str = "auto",
        log=print,
    ) -> tuple[StagedNet, dict[str, Any], bool]:
        """(teacher, card, was_cached): from the cache, or trained now and cached.

        A cached teacher loads without touching the lock. Otherwise the teacher's lock is taken
        (waiting, with a line every WAIT_LOG_S, while another process holds it) and the cache
        checked again under it: whoever held the lock may just have written the teacher."""
        cached = self.load(spec)
        if cached is not None:
            return (*cached, True)
        if data is None:  # before the lock, so that bad input fails with nothing written
            data = spec.data.load(spec.seed)
        with self.training_lock(spec, log):
            cached = self.load(spec, warn=False)  # the first check already warned
            if cached is not None:
                return (*cached, True)
            make = published_teacher if spec.checkpoint is not None else train_teacher
            model, card = make(spec, data, device=device, log=log)
            return model, self.save(spec, model, card), False

    @contextmanager
    def training_lock(self, spec: TeacherSpec, log=print) -> Iterator[None]:
        """Hold the teacher's lock. It is an flock(2) on `<key>.lock` (filelock's FileLock on
        Linux), which the kernel drops when its holder exits or is killed, even by SIGKILL, so
        a dead trainer never blocks the others; the file itself stays, harmless and reused."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.lock_path(spec)
        lock = FileLock(path)
        start = time.monotonic()
        timeout = 0.0  # first a try, so the wait is announced as it begins
        while True:
            try:
                lock.acquire(timeout=timeout)
                break
            except Timeout:
                waited = timedelta(seconds=round(time.monotonic() - start))
                log(f"waiting for another process training teacher {spec.arch} on "
                    f"{spec.dataset} (lock {path}); waited {waited}")
                timeout = WAIT_LOG_S
        try:
            yield
        finally:
            lock.release()


def supervised(model: StagedNet, data) -> Distiller:
    """Plain supervised training of `model` on `data`'s task."""
    return build_distiller("vanilla", model, task=data.info.task)


def card_score(card: dict) -> str:
    """A teacher card's score: `test accuracy 93.10% (best epoch 93.40%)`, `test mIoU ...`."""
    task = task_of(card)
    return (f"test {task.metric_name} {task.show(card[f'test_{task.metric}'])} (best epoch "
            f"{task.show(card[f'test_{task.metric}_best'])})")


def published_teacher(spec: TeacherSpec, data, device="auto", log=print):
    """A published checkpoint as a teacher: (model in eval mode, card), its test accuracy
    measured here."""
    model = load_teacher_checkpoint(spec.checkpoint, spec.arch, data.num_classes,
                                    data.in_channels)
    log(f"measuring published teacher {spec.arch} ({spec.checkpoint}) on {len(data.test_y)} "
        f"{spec.dataset} test images")
    engine = Engine(supervised(model, data), data, spec.recipe, device=device, seed=spec.seed)
    scores = engine.evaluate()
    metric = engine.task.metric
    card = {"arch": spec.arch, "dataset": spec.dataset, "num_classes": data.num_classes,
            "in_channels": data.in_channels, "n_test": len(data.test_y),
            "checkpoint": str(spec.checkpoint),
            **{f"test_{k}": scores[f"test_{k}"] for k in engine.task.metric_labels},
            f"test_{metric}_best": scores[f"test_{metric}"],
            "history": [], "train_s": 0.0, "torch": torch.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    return model.cpu().eval().requires_grad_(False), card


def train_teacher(spec: TeacherSpec, data, device="auto", log=print):
    """Train a teacher from scratch; returns (model in eval mode, card without hashes)."""
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch, data.num_classes, data.in_channels)
    engine = Engine(supervised(model, data), data, spec.recipe, device=device, seed=spec.seed)
    log(f"training teacher {spec.arch} on {spec.dataset} ({len(data.train_y)} train / "
        f"{len(data.test_y)} test images, {spec.recipe.epochs} epochs, {engine.device})")
    start = time.perf_counter()
    engine.fit(on_epoch=lambda row: log(progress_line(row, spec.recipe.epochs, start)))
    last = engine.history[-1]
    card = {
        "arch": spec.arch,
        "dataset": spec.dataset,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "n_train": len(data.train_y),
        "n_test": len(data.test_y),
        "seed": spec.seed,
        "recipe": spec.recipe.to_dict(),
        **{f"test_{k}": last[f"test_{k}"] for k in engine.task.metric_labels},
        f"test_{engine.task.metric}_best": last[f"test_{engine.task.metric}_best"],
        "history": engine.history,
        "train_s": round(time.perf_counter() - start, 1),
        "device": str(engine.device),
        "torch": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return model.cpu().eval().requires_grad_(False), card


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="teachers.py",
                      description="Pretrain a teacher, or fetch it from the cache.")
    p.add_argument("--arch", default="resnet20", help=f"model name: {', '.join(MODEL_NAMES)}")
    add_data_args(p)
    add_recipe_args(p)
    add_runtime_args(p)
    p.add_argument("--retrain", action="store_true", help="ignore a cached teacher and retrain")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        check_common(args)
        recipe = recipe_from_args(args)
        data = data_section(args)
        spec = TeacherSpec(data, args.arch, recipe, args.seed)
        cache = TeacherCache(args.cache_dir)
        if args.retrain:
            for path in cache.paths(spec):
                path.unlink(missing_ok=True)
        _, card, cached = cache.get(spec, device=args.device)
        source = "from the cache" if cached else f"trained in {card['train_s']:.0f} s"
        print(f"teacher {card['arch']} on {card['dataset']}: {card_score(card)} "
              f"({card['n_test']} test images), {source}")
        print(f"weights: {cache.paths(spec)[0]} (SHA-256 {card['weights_sha256']})")
        return 0

    return run_main("teachers.py", body)


if __name__ == "__main__":
    sys.exit(main())
