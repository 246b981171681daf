"""The benchmark runner's document handling, the grid it builds, and the engine's speed switches.

Timings themselves are never asserted: benchmarks/run.py reports them as ratios.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import init_ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run as bench_run  # noqa: E402
import search_efficiency  # noqa: E402
from common import Result, Target  # noqa: E402

from sdkd_core.data import load_dataset  # noqa: E402
from sdkd_core.distillers import build_distiller  # noqa: E402
from sdkd_core.engine import Engine  # noqa: E402
from sdkd_core.models import build_model  # noqa: E402
from sdkd_core.recipe import Recipe  # noqa: E402
from study.load import load_study_file  # noqa: E402
from study.plan import drawn_trial_count  # noqa: E402


def block(name: str, measured: str, reached: bool | None) -> str:
    result = Result(f"table of {name}", [Target(f"goal of {name}", measured, "<= 1", reached)])
    return bench_run.render_block(name, name.title(), f"{name}.py", ["--x"], result, 1.0, False)


def test_update_replaces_only_its_block_and_rebuilds_the_targets():
    hand = "# Benchmarks\n\nIntro written by hand.\n\n## Teacher pretraining\n\nHand table.\n"
    text = bench_run.update(hand, {"step_cost": block("step_cost", "1.20", True)})
    text = bench_run.update(text, {"data_path": block("data_path", "9 %", False)})
    assert text.count("<!-- targets -->") == 1
    assert "| goal of step_cost | 1.20 | <= 1 | reached |" in text
    assert "| goal of data_path | 9 % | <= 1 | **not reached** |" in text
    assert text.index("<!-- targets -->") < text.index("## Teacher pretraining")

    again = bench_run.update(text, {"step_cost": block("step_cost", "1.30", None)})
    assert "| goal of step_cost | 1.30 | <= 1 | not measured |" in again
    assert "1.20" not in again
    # Everything outside the replaced block and the targets table is unchanged.
    strip = bench_run.TARGETS.sub("", bench_run.BLOCK.sub(
        lambda m: "" if m["name"] == "step_cost" else m.group(0), again))
    assert strip == bench_run.TARGETS.sub("", bench_run.BLOCK.sub(
        lambda m: "" if m["name"] == "step_cost" else m.group(0), text))
    assert "Intro written by hand." in again and "Hand table." in again
    assert "    python benchmarks/data_path.py --x" in again


def test_unknown_section_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_run.main(["--only", "step_cost,warp_speed"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown section(s) warp_speed" in err[-1]


def test_grid_axes():
    assert search_efficiency.grid_axis({"type": "loguniform", "low": 0.1, "high": 10}, 3) == \
        [0.1, 1.0, 10.0]
    assert search_efficiency.grid_axis({"type": "uniform", "low": 0.2, "high": 0.8}, 3) == \
        [0.2, 0.5, 0.8]
    assert search_efficiency.grid_axis({"type": "int", "low": 1, "high": 3}, 5) == [1, 2, 3]
    assert search_efficiency.grid_axis({"type": "int", "low": 0, "high": 10}, 3) == [0, 5, 10]
    assert search_efficiency.grid_axis({"type": "choice", "values": [1, 2, 3]}, 2) == [1, 2, 3]


def test_grid_of_the_default_space_is_a_valid_grid_sweep(tmp_path):
    base = yaml.safe_load((ROOT / "ablations.yaml").read_text())
    doc = search_efficiency.grid_document(base, 3, quick=False)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(doc))
    file = load_study_file(path)
    assert file.search.sampler == "grid" and file.search.scheduler == "none"
    assert file.baselines == []
    assert file.recipe == load_study_file(ROOT / "ablations.yaml").recipe  # same trials, all
    # The subject's own keys only (SDKD's lambda x boundary x depth), on the one pair.
    assert file.tuned_methods == ["sdkd"] and set(file.space) == {
        "sdkd.lambda", "sdkd.phase_boundary", "sdkd.ffb_depth"}
    assert drawn_trial_count(file) == 3 * 3 * 3
    assert search_efficiency.search_metric(doc) == "val_acc"  # what the searchers see


@pytest.mark.slow
def test_a_replayed_search_spends_epochs_until_it_reaches_the_target(tmp_path):
    """TPE+ASHA through the sweep's own searcher and scheduler, over a known table of curves:
    it stops when a trial ends at the target, and counts each reported epoch once."""
    import ray

    base = yaml.safe_load((ROOT / "ablations.yaml").read_text())
    doc = search_efficiency.grid_document(base, 2, quick=True)
    keys = list(doc["space"])
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(
        *(d["values"] for d in doc["space"].values()))]
    pair = doc["pairs"][0]
    epochs = doc["recipe"]["epochs"]
    # One configuration ends at 90, the others at 50: the target is reached only by it.
    table = {search_efficiency.config_key(pair["teacher"], pair["student"], p, keys):
             [50.0 + (40.0 * e / epochs if i == 3 else 0) for e in range(1, epochs + 1)]
             for i, p in enumerate(points)}
    # The workers import the benchmark module as the script's own process would find it.
    path = os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)])
    init_ray(logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        outcome = search_efficiency.replay(doc, table, "tpe+asha", 0, 89.5, tmp_path)
    finally:
        ray.shutdown()
    assert outcome["reached"], outcome
    assert epochs <= outcome["epochs"] <= len(table) * 2 * epochs
    assert 1 <= outcome["trials"] <= len(table) * 2


def test_summary_counts_a_search_that_never_reached_the_target_as_infinite():
    rows = search_efficiency.summarise({"tpe+asha": [
        {"epochs": 10, "reached": True}, {"epochs": 30, "reached": True},
        {"epochs": 99, "reached": False}]}, grid_epochs=100)
    (row,) = rows
    assert row["median"] == pytest.approx(0.30)
    assert math.isinf(row["worst"])
    assert (row["reached"], row["within_40"], row["seeds"]) == (2, 2, 3)


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", n_train=640, n_test=128)


def engine(data, **switches) -> Engine:
    torch.manual_seed(0)
    student = build_model("resnet8", data.num_classes, data.in_channels)
    return Engine(build_distiller("vanilla", student, None), data,
                  Recipe(epochs=3, batch_size=64), device="cpu", **switches)


def test_channels_last_switch_sets_the_weights_memory_format(synthetic):
    def conv_weights(e):
        return [p for p in e.method.parameters() if p.dim() == 4]

    on, off = engine(synthetic), engine(synthetic, channels_last=False)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights(on))
    assert all(p.is_contiguous() for p in conv_weights(off))
    assert not any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                   for p in conv_weights(off))


def test_bf16_autocast_on_the_cpu_learns(synthetic):
    e = engine(synthetic, amp=True)
    assert e.use_amp and not engine(synthetic).use_amp  # off by default on the CPU
    rows = e.fit()
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["test_acc"] > 20  # 10 classes: chance is 10 %


@pytest.mark.slow
def test_compiled_step_matches_eager(synthetic):
    eager, compiled = engine(synthetic), engine(synthetic, compile=True)
    start = torch.cat([p.detach().flatten() for p in eager.method.parameters()])
    a, b = eager.train_epoch(), compiled.train_epoch()
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1.0)
    after_eager = torch.cat([p.detach().flatten() for p in eager.method.parameters()])
    after_compiled = torch.cat([p.detach().flatten() for p in compiled.method.parameters()])
    # The same updates, up to the compiled kernels' rounding: far smaller than the updates.
    assert (after_compiled - after_eager).norm() < 0.05 * (after_eager - start).norm()
