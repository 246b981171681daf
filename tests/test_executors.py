"""Every sweep feature under both executors: trials in the Tune process (`in_trial`) and trials
through Ray Train (`ray_train`, here with two DDP workers per trial over gloo).

One sweep per executor serves every assertion: ASHA over drawn trials whose first epochs differ,
two trials at a time, one of them diverging, the best drawn configuration confirmed on a second
seed (in_trial), and the sweep SIGKILLed halfway (right after Optuna stored a draw, before Tune
saved the experiment) and finished with --resume. A stall (a Ray Train trial whose workers cannot be
placed) is reported in one line instead of a silent hang.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import OWN_RAY, ROOT, SWEEP_TEACHERS, fashion_folder
from sweeps import assert_tracked, read_csv, result_lines, sweep, sweep_killed_after_draw
from test_faults import TableReader

from study.runfolder import RunFolder

EPOCHS = 3
# kd.ce_weight 1e-4 (with kd_weight 0) does not learn, 0.5 and 1.0 do: at epoch 2 (ASHA's rung)
# they stand at about 12%, 22% and 30% on these 256 images (after epoch 1 all are still near
# chance: a rung there would rank them by noise). 1e30 diverges. Four draws, in the grid
# sampler's seeded order 1e30, 1.0, 0.5, 1e-4: one diverges, two learn, and the last, behind
# them at the rung, is stopped there; two have ended at the kill after the fourth draw.
# The images are real Fashion-MNIST JPEGs in an image folder, streamed through Ray Data: the
# edge cases hold for a streamed sweep too (ASHA, SIGKILL and --resume, both executors).
EDGE_SPACE = """\
name: edge-{executor}
dataset: {{name: imagefolder, root: {root}, image_size: 32, crop: pad, stream: true,
           decode_cpus: 0.5, n_train: 256, n_test: 128}}
recipe: {{epochs: {epochs}, batch_size: 32}}
teacher: {{epochs: 1, n_train: 256}}
pairs:
  - {{teacher: resnet14, student: resnet8}}
baselines: []
seeds: {seeds}
search: {{methods: [kd], sampler: grid, grace_period: 2, reduction_factor: 2}}
space:
  kd.ce_weight: {{type: choice, values: [1.0, 0.5, 1.0e+30, 0.0001]}}
  kd.kd_weight: {{type: choice, values: [0.0]}}
resources: {resources}
tracking: {{mlflow: true}}
"""
# The confirming experiment (the best draw on seed 1) runs under in_trial; its trials are
# trials like any other, and under Ray Train a second experiment costs a minute of start-up.
SEEDS = {"in_trial": "[0, 1]", "ray_train": "[0]"}
RESOURCES = {
    # Ray Data's decoding tasks need CPUs the trials leave free.
    "in_trial": "{max_concurrent: 2, executor: in_trial, cpus_per_worker: 0.5}",
    "ray_train": "{max_concurrent: 2, executor: ray_train, num_workers: 2, cpus_per_worker: 0.25}",
}
TERMINAL = ("completed", "stopped", "diverged")


@pytest.fixture(scope="module", params=["in_trial", "ray_train"])
def edge_run(request, tmp_path_factory):
    executor = request.param
    tmp = tmp_path_factory.mktemp(f"edge-{executor}")
    space = tmp / "edge.yaml"
    space.write_text(EDGE_SPACE.format(executor=executor, epochs=EPOCHS, root=fashion_folder(),
                                       resources=RESOURCES[executor], seeds=SEEDS[executor]))
    run, cache = tmp / "run", SWEEP_TEACHERS
    # A Ray of its own: its raylet's warnings are this sweep's (see the last test below).
    sweep_killed_after_draw("kd-drawn-0004", space, run, cache, env=OWN_RAY)  # 2+ have ended
    folder = RunFolder(run)
    ended = folder.ends()
    before = {name: (folder.history(name), end) for name, end in ended.items()}
    running = {p.stem: folder.history(p.stem) for p in (run / "history").glob("*.json")
               if p.stem not in ended}
    reader = TableReader(run)  # the tables, read over and over while concurrent trials write
    reader.start()
    try:
        result = sweep("--resume", "--output", str(run), "--no-report", cache=cache,
                       env=OWN_RAY)
    finally:
        reader.halt.set()
        reader.join()
    assert result.returncode == 0, result.stderr[-3000:]
    return SimpleNamespace(executor=executor, run=run, result=result, before=before,
                           running=running, reader=reader,
                           results={r["trial_id"]: r for r in read_csv(run / "results.csv")},
                           epochs=read_csv(run / "epochs.csv"))


@pytest.mark.slow
def test_every_trial_ends_and_each_epoch_is_recorded_once_after_a_sigkill(edge_run):
    results = edge_run.results
    confirming = 1 if edge_run.executor == "in_trial" else 0
    assert len(results) == 4 + confirming, sorted(results)  # a grid of 4, and confirming
    assert all(r["status"] in TERMINAL for r in results.values()), results
    # Each grid point drawn once, though draws handed out just before the kill were lost.
    drawn = Counter((r["kd.ce_weight"], r["kd.kd_weight"]) for r in results.values()
                    if r["role"] == "drawn")
    assert len(drawn) == 4 and set(drawn.values()) == {1}, drawn
    counts = Counter((r["trial_id"], r["epoch"]) for r in edge_run.epochs)
    assert set(counts.values()) == {1}
    for trial_id, r in results.items():
        epochs = sorted(int(e["epoch"]) for e in edge_run.epochs if e["trial_id"] == trial_id)
        assert epochs == list(range(1, int(r["epochs"]) + 1)), (trial_id, epochs)
        if r["status"] == "completed":
            assert int(r["epochs"]) == EPOCHS
    # Trials that had ended before the kill never ran again: their records are unchanged,
    # also those that ended after Tune's last snapshot of the experiment.
    folder = RunFolder(edge_run.run)
    assert len(edge_run.before) >= 2
    for trial_id, (history, end) in edge_run.before.items():
        assert (folder.history(trial_id), folder.end_of(trial_id)) == (history, end), trial_id
    # The draws are exactly those of an uninterrupted sweep: each name once, each with the
    # parameters Optuna stored under it (the draw stored just before the kill included).
    import optuna

    study = optuna.load_study(study_name=f"edge-{edge_run.executor}",
                              storage=f"sqlite:///{edge_run.run / 'optuna.db'}")
    stored = {t.user_attrs["trial_name"]: t.params for t in study.trials}
    assert sorted(stored) == [f"kd-drawn-000{i}" for i in range(1, 5)]
    for name, params in stored.items():
        row = results[name]
        assert {k: float(row[k]) for k in params} == params, (name, row)
    # Those that were running continued from a checkpoint instead of starting over: their
    # epochs before the last one recorded are the same records, timings included (the last
    # may be trained again when the kill came before Tune kept its checkpoint).
    for trial_id, history in edge_run.running.items():
        after = folder.history(trial_id)
        assert after[:len(history) - 1] == history[:-1], trial_id
        assert [(r["epoch"], r["test_acc"]) for r in after[:len(history)]] == \
            [(r["epoch"], r["test_acc"]) for r in history], trial_id


@pytest.mark.slow
def test_mlflow_holds_one_run_per_trial_with_every_epoch_after_a_sigkill(edge_run):
    """The study file's `tracking: {mlflow: true}`: one parent, one child per trial with its
    parameters and every epoch, under both executors, though the sweep was SIGKILLed and
    resumed (the resumed sweep found the runs the first one had opened)."""
    assert_tracked(edge_run.run, f"edge-{edge_run.executor}")
    assert "mlflow ui --backend-store-uri sqlite:///" in edge_run.result.stdout


@pytest.mark.slow
def test_tensorboard_reads_every_trial_and_its_epochs(edge_run):
    """The event files Tune writes hold every trial, a Ray Train one included, and its epochs
    (a resumed trial's second file read with the first). Ray Train V2 relays each report to
    Tune through a one-item queue that the trial's end can leave undrained, so a Ray Train
    trial's last epochs may be missing there (its first is not, nor any it did not train);
    the run folder and the trackers hold them all."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    events = EventMultiplexer()
    for experiment in ("tune", "confirm"):
        if (edge_run.run / experiment).is_dir():
            events.AddRunsFromDirectory(str(edge_run.run / experiment))
    events.Reload()
    seen: dict[str, set[int]] = {}
    for run_dir in events.Runs():
        trial = Path(run_dir).name
        if trial in edge_run.results:
            scalars = events.Scalars(run_dir, "ray/tune/epoch")
            seen.setdefault(trial, set()).update(int(s.value) for s in scalars)
    for trial, row in edge_run.results.items():
        if row["status"] == "diverged":
            continue
        trained = set(range(1, int(row["epochs"]) + 1))
        if edge_run.executor == "ray_train":
            got = seen.get(trial, set())
            assert 1 in got and got <= trained, (trial, got)
        else:
            assert seen.get(trial, set()) >= trained, (trial, seen.get(trial))


@pytest.mark.slow
def test_a_streamed_sweep_reports_top1_and_top5_of_every_epoch(edge_run):
    """The images streamed from the folder: every epoch's row and results.csv carry top-1 and
    top-5, top-5 at least top-1, and every file decoded."""
    out = edge_run.result.stdout
    assert "streamed through Ray Data" in out, out[:2000]
    trained = [r for r in edge_run.results.values() if r["status"] in ("completed", "stopped")]
    assert trained
    for r in trained:
        assert 0 <= float(r["test_acc"]) <= float(r["test_top5"]) <= 100, r
    assert any(float(r["test_top5"]) > 60 for r in trained)  # 10 classes: chance is 50%
    assert all(e["files_skipped"] == "0" for e in edge_run.epochs)


@pytest.mark.slow
def test_asha_stops_weak_drawn_trials_while_two_run_at_a_time(edge_run):
    drawn = [r for r in edge_run.results.values() if r["role"] == "drawn"]
    stopped = [r for r in drawn if r["status"] == "stopped"]
    assert stopped, [(r["trial_id"], r["status"], r["epochs"]) for r in drawn]
    assert all(1 <= int(r["epochs"]) < EPOCHS for r in stopped)
    # Two trials trained at the same time: their epoch intervals overlap.
    spans = []
    for r in drawn:
        lines = result_lines(edge_run.run, r["trial_id"])
        if lines:
            spans.append((lines[0]["timestamp"] - lines[0]["time_this_iter_s"],
                          lines[-1]["timestamp"]))
    spans.sort()
    pairs = zip(spans, spans[1:], strict=False)
    assert any(later[0] < earlier[1] for earlier, later in pairs), spans


@pytest.mark.slow
def test_diverging_trials_are_recorded_and_the_sweep_goes_on(edge_run):
    diverged = [r for r in edge_run.results.values() if r["status"] == "diverged"]
    assert [float(r["kd.ce_weight"]) for r in diverged] == [1e30]
    assert all(r["diverged_epoch"] == "1" and r["epochs"] == "0" for r in diverged)
    assert "Diverged (loss NaN or infinite, left out above)" in edge_run.result.stdout
    # Optuna counts them as failed, not as (NaN) values; every other drawn trial is told its
    # outcome once, though the sweep was killed and resumed.
    import optuna

    study = optuna.load_study(study_name=f"edge-{edge_run.executor}",
                              storage=f"sqlite:///{edge_run.run / 'optuna.db'}")
    states = Counter((t.params.get("kd.ce_weight") == 1e30, t.state.name)
                     for t in study.trials)
    assert states == {(True, "FAIL"): 1, (False, "COMPLETE"): 3}, states
    for t in study.trials:  # the value told is the metric the run folder recorded last
        row = edge_run.results[t.user_attrs["trial_name"]]
        if t.state.name == "COMPLETE":
            assert t.value == float(row["test_acc"]), (t.number, row)


@pytest.mark.slow
def test_tables_of_concurrent_trials_are_complete_at_every_read(edge_run):
    reader = edge_run.reader
    assert not reader.problems, reader.problems[:5]
    assert reader.reads["results.csv"] > 10 and reader.reads["epochs.csv"] > 10, reader.reads
    folder = RunFolder(edge_run.run)
    for row in edge_run.epochs:  # each row is its trial's own record, once
        (own,) = [x for x in folder.history(row["trial_id"]) if x["epoch"] == int(row["epoch"])]
        assert float(row["test_acc"]) == own["test_acc"]
        assert float(row["train_loss"]) == own["train_loss"]
    assert not list(edge_run.run.glob("**/.*.tmp"))


@pytest.mark.slow
def test_the_best_drawn_configuration_is_confirmed_on_the_other_seed(edge_run):
    results = edge_run.results.values()
    if edge_run.executor == "ray_train":  # one seed: nothing to confirm on, no experiment
        assert not [r for r in results if r["role"] == "confirming"]
        assert not (edge_run.run / "confirm").exists()
        return
    completed = [r for r in results if r["role"] == "drawn" and r["status"] == "completed"]
    best = max(completed, key=lambda r: float(r["test_acc"]))
    (confirm,) = [r for r in results if r["role"] == "confirming"]
    assert confirm["trial_id"] == f"{best['trial_id']}-s1" and confirm["seed"] == "1"
    assert confirm["status"] == "completed"
    keys = ("kd.ce_weight", "kd.kd_weight")
    assert [confirm[k] for k in keys] == [best[k] for k in keys]
    assert float(best["test_acc"]) > 15.0  # it learned: 10 classes


@pytest.mark.slow
def test_trials_ran_on_the_executor_asked_for(edge_run):
    workers = {e["workers"] for e in edge_run.epochs}
    assert workers == ({"2"} if edge_run.executor == "ray_train" else {"1"})
    train_dir = edge_run.run / "tune" / "ray_train"
    assert train_dir.is_dir() == (edge_run.executor == "ray_train")
    if edge_run.executor == "ray_train":  # Ray Train's own run folders, with checkpoints
        completed = [t for t, r in edge_run.results.items()
                     if r["status"] == "completed" and r["role"] == "drawn"]
        assert all(any((train_dir / t).glob("checkpoint_*")) for t in completed), completed


@pytest.mark.slow
def test_rays_own_messages_go_to_ray_log_not_the_terminal(edge_run):
    """A Ray Train sweep starts enough worker processes for the raylet to warn "N PYTHON worker
    processes have been started", which Ray's driver prints as a "(raylet) ..." line whatever
    log_to_driver says: study/ray_start.py sends it to the run folder's ray.log."""
    terminal = edge_run.result.stdout + edge_run.result.stderr
    assert "(raylet)" not in terminal, terminal[-3000:]
    if edge_run.executor == "ray_train":
        text = (edge_run.run / "ray.log").read_text()
        assert "(raylet) WARNING:" in text and "worker processes have been started" in text


STALL_SPACE = """\
name: stall
dataset: {name: synthetic, n_train: 256, n_test: 128}
recipe: {epochs: 1, batch_size: 32}
teacher: {epochs: 1}
pairs: [{teacher: resnet14, student: resnet8}]
baselines: [kd]
resources: {executor: ray_train, cpus_per_worker: 2}
"""


@pytest.mark.slow
def test_a_stalled_sweep_says_which_trial_waits_for_what(tmp_path):
    """Ray given 1 CPU: the trial starts (it holds no CPU), its 2-CPU Train worker never can."""
    import os

    space = tmp_path / "stall.yaml"
    space.write_text(STALL_SPACE)
    cmd = [sys.executable, "study/sweep.py", "--space", str(space), "--output",
           str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--num-cpus", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **OWN_RAY, "SDKD_STALL_MIN_S": "3"})
    lines: list[str] = []
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("stalled:") and "Ray Train workers" in line:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    stall = [x for x in lines if x.startswith("stalled:") and "Ray Train workers" in x]
    assert stall, "".join(lines[-20:])
    assert "kd-resnet14-resnet8-s0 waits for its Ray Train workers (1 x {CPU: 2})" in stall[0]
    assert "free CPU 1 of 1" in stall[0]
