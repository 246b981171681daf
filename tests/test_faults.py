"""Faults in the middle of a sweep, and what they must not cost: a killed worker costs at most
the epoch it was in, a diverging trial costs only itself, an unwritable run folder costs nothing,
and the tables read complete at every moment."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import SWEEP_TEACHERS, assert_usage_error, start_cli
from sweeps import read_csv, result_lines, sweep, tiny_space, wait_for

from sdkd_core.files import write_csv

# Metrics that measure the machine, not the training: they may differ between runs.
TIMING = {"images_per_s", "train_s", "eval_s"}


def same_numbers(rows: list[dict], reference: list[dict]) -> bool:
    """Every number the engine reports, timing aside, equal to the last bit."""
    keys = set(reference[0]) - TIMING
    return [{k: r[k] for k in keys} for r in rows] == [{k: r[k] for k in keys}
                                                      for r in reference]


KILL_SPACE = """\
name: {name}
dataset: {{name: synthetic, n_train: 640, n_test: 128}}
recipe: {{epochs: 3, batch_size: 8}}  # many small steps: time to kill mid-epoch
teacher: {{epochs: 1}}
pairs:
  - {{teacher: resnet14, student: resnet8}}
baselines: [kd]
seeds: [0]
search: {{scheduler: none}}
resources: {{executor: {executor}, max_failures: 2}}
"""


# The uninterrupted trial's history: the same for both executors (the space differs only in
# its name and executor), so trained once.
REFERENCES: dict[str, list[dict]] = {}


def reference_history(space_path: Path, run: Path, cache: Path, trial: str) -> list[dict]:
    """The same trial, uninterrupted, through the same engine in this process."""
    key = re.sub(r"^name: .*$|executor: \w+", "", space_path.read_text(), flags=re.M)
    if key not in REFERENCES:
        REFERENCES[key] = _train_reference(space_path, run, cache, trial)
    return REFERENCES[key]


def _train_reference(space_path: Path, run: Path, cache: Path, trial: str) -> list[dict]:
    from study.distill import prepare
    from study.load import load_study_file
    from study.runfolder import RunFolder
    from study.runfolder.trials import PlannedTrial
    from study.study_object import make_study
    from study.teachers import TeacherCache

    study = make_study(load_study_file(space_path), RunFolder(run), cache)
    config = json.loads((run / "tune" / trial / "params.json").read_text())
    planned = PlannedTrial.from_config(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trial (cpus_per_worker: 1): the same float sums
    try:
        engine = prepare(planned, study.file.dataset, study.recipe_of(planned),
                         study.teacher_of(planned), TeacherCache(cache), device="cpu",
                         log=lambda _: None)
        engine.fit()
    finally:
        torch.set_num_threads(threads)
    return engine.history


def checkpoints(run: Path, trial: str) -> list[Path]:
    """The checkpoints a Ray Train worker has persisted for `trial` (Train keeps the last)."""
    from study.runfolder import RunFolder

    return sorted((RunFolder(run).train_dir / trial).glob("checkpoint_*"))


def train_worker_pids() -> set[int]:
    import psutil

    pids = set()
    for proc in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in part for part in proc.info["cmdline"] or []):
            pids.add(proc.pid)
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["in_trial", "ray_train"])
def test_worker_killed_mid_epoch_resumes_with_identical_metrics(tmp_path, executor):
    space = tmp_path / "kill.yaml"
    space.write_text(KILL_SPACE.format(name=f"kill-{executor}", executor=executor))
    run, cache = tmp_path / "run", SWEEP_TEACHERS
    trial = "kd-resnet14-resnet8-s0"
    proc = start_cli("study/sweep.py", "--space", str(space), "--output", str(run),
                     "--cache-dir", str(cache), "--no-report")
    try:
        if executor == "in_trial":
            # The Tune trial process runs the epochs itself and reports each one at once.
            wait_for(lambda: result_lines(run, trial), 300, "the first epoch", proc, every=0.05)
            victim = result_lines(run, trial)[0]["pid"]
        else:
            # Ray Train relays reports to Tune late; the worker's own checkpoints are the clock.
            wait_for(lambda: checkpoints(run, trial), 300, "the first checkpoint", proc,
                     every=0.05)
            (victim,) = train_worker_pids()
        time.sleep(0.3)  # into epoch 2 (an epoch takes a few seconds)
        if executor == "in_trial":
            assert len(result_lines(run, trial)) == 1, "epoch 2 ended before the kill"
        os.kill(victim, signal.SIGKILL)
        if executor == "ray_train":
            # Proof that the kill fell inside training: Ray Train starts a new worker to finish.
            wait_for(lambda: train_worker_pids() - {victim}, 120, "a new train worker", proc,
                     every=0.05)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    lines = result_lines(run, trial)
    # Epoch 1 was not trained again: the restart continued from its checkpoint.
    assert [r["epoch"] for r in lines] == [1, 2, 3], [r["epoch"] for r in lines]
    if executor == "in_trial":
        assert lines[-1]["pid"] != victim  # a new process finished the trial
    (row,) = read_csv(run / "results.csv")
    assert row["status"] == "completed" and row["epochs"] == "3", row

    reference = reference_history(space, run, cache, trial)
    assert {"train_loss", "test_acc", "test_loss", "loss_kd"} <= set(reference[0])
    assert same_numbers(lines, reference)


# ---------------------------------------------------------------- tables read while written


class TableReader(threading.Thread):
    """Reads results.csv and epochs.csv over and over while the sweep writes them."""

    def __init__(self, run: Path):
        super().__init__(daemon=True)
        self.folder, self.reads, self.problems = run, Counter(), []
        self.halt = threading.Event()

    def read(self, path: Path) -> None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return
        rows = list(csv.reader(io.StringIO(text)))
        header = rows[0] if rows else []
        if "trial_id" not in header:
            self.problems.append(f"{path.name}: no header in {text[:80]!r}")
        for row in rows[1:]:
            if len(row) != len(header) or not row[0]:
                self.problems.append(f"{path.name}: a broken row {row}")
        self.reads[path.name] += 1

    def run(self):  # noqa: D102 - threading.Thread's entry point
        while not self.halt.is_set():
            for name in ("results.csv", "epochs.csv"):
                self.read(self.folder / name)
            time.sleep(0.02)


def _rewrite(path: str, writer: int, rounds: int) -> None:
    for i in range(rounds):
        rows = [{"trial_id": f"w{writer}-r{i}", "epoch": e, "test_acc": writer * 100 + e}
                for e in range(200)]
        write_csv(path, rows)


def test_concurrent_writers_never_leave_a_mixed_or_partial_file(tmp_path):
    """Four processes rewrite one table while this one reads it: every read is one writer's
    complete table."""
    path = tmp_path / "results.csv"
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_rewrite, args=(str(path), w, 60)) for w in range(4)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers) or reads == 0:
        if path.exists():
            rows = list(csv.DictReader(io.StringIO(path.read_text())))
            assert len(rows) == 200, len(rows)
            assert len({r["trial_id"] for r in rows}) == 1  # one writer's version
            reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert reads > 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


# ---------------------------------------------------------------- an unwritable run folder


@pytest.mark.parametrize("where", ["a-file", "inside-a-file"])
def test_unwritable_output_is_one_line_before_anything_runs(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder\n")
    output = blocker if where == "a-file" else blocker / "run"
    space = tmp_path / "space.yaml"
    space.write_text(KILL_SPACE.format(name="unwritable", executor="in_trial"))
    result = sweep("--space", str(space), "--output", str(output), cache=tmp_path / "cache")
    assert_usage_error(result, f"{output}: the run folder cannot be written")
    assert "pass --output with a writable folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "space.yaml"]
    assert blocker.read_text() == "not a folder\n"


def test_a_trial_stopped_while_its_epoch_ran_records_no_epoch_past_its_end(tmp_path):
    """Tune hears of a Ray Train epoch a poll later: ASHA's stop may come while the next epoch
    runs. The stop recorded first stands, and that epoch is neither in the history nor the end."""
    from study.load import load_study_file
    from study.runfolder import RunFolder
    from study.runfolder.trials import PlannedTrial
    from study.study_object import make_study
    from study.trial import train_epochs

    study = make_study(load_study_file(tiny_space(tmp_path, epochs=3)), RunFolder(tmp_path / "run"),
                       tmp_path / "cache")
    trial = PlannedTrial("kd", "resnet14", "resnet8")
    reported = []

    def report(metrics, folder):
        reported.append(metrics["epoch"])
        if metrics["epoch"] == 1:  # the stop, heard once epoch 2 has begun
            study.folder.record_end(trial.name, "stopped", metrics)

    assert train_epochs(trial, study, report, None, device="cpu") is None
    assert reported == [1]
    assert [r["epoch"] for r in study.folder.history(trial.name)] == [1]
    end = study.folder.end_of(trial.name)
    assert (end["how"], end["epoch"]) == ("stopped", 1)
