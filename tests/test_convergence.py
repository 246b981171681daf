"""A cell the budget decided: the rule on known curves, its mark in the tables and the claims'
refusal to rest a verdict on it."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from analysis.convergence import MARK, MIN_GAIN, cell_trend, late_gain, run_improving, window


def curves(**by_trial: list[float]) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": t, "epoch": e + 1, "test_acc": a}
                         for t, accs in by_trial.items() for e, a in enumerate(accs)])


def test_late_gain_looks_back_a_quarter_of_the_epochs():
    assert [window(n) for n in (1, 3, 4, 8, 12, 240)] == [2, 2, 2, 2, 3, 60]
    epochs = curves(a=[10, 20, 30, 40, 50, 60, 61, 62], b=[24.4, 54.2, 54.6, 63.2], c=[50.0])
    assert late_gain(epochs, "a") == pytest.approx(62 - 60)  # 8 epochs: back 2
    assert late_gain(epochs, "b") == pytest.approx(63.2 - 54.2)  # 4 epochs: back 2
    assert late_gain(curves(d=[20, 30]), "d") == pytest.approx(10)  # 2 epochs: back 1
    assert pd.isna(late_gain(epochs, "c"))
    assert run_improving(late_gain(epochs, "b")) and not run_improving(MIN_GAIN)


def test_validation_accuracy_is_followed_where_the_run_held_some():
    epochs = curves(a=[10, 50]).assign(val_acc=[40.0, 41.0])
    assert late_gain(epochs, "a") == pytest.approx(1.0)


def test_a_cell_is_still_improving_only_beyond_its_seed_spread():
    epochs = curves(s0=[24.4, 54.2, 54.6, 63.2], s1=[30, 50, 60, 68.6], s2=[60, 71.9, 72, 72.2])
    rising = cell_trend(epochs, ["s0", "s1"], [63.2, 68.6])
    assert rising.mean_gain == pytest.approx((9.0 + 18.6) / 2)
    assert rising.spread == pytest.approx(pd.Series([63.2, 68.6]).std())
    assert rising.improving and "still gaining 13.8 points" in rising.describe("SHAKE")
    flat = cell_trend(epochs, ["s2"], [72.2])
    assert flat.threshold == MIN_GAIN and not flat.improving
    # Gains smaller than the spread between seeds are noise: no mark.
    noisy = cell_trend(curves(x=[50, 52], y=[70, 72]), ["x", "y"], [52, 72])
    assert noisy.mean_gain == 2 and noisy.threshold > 2 and not noisy.improving


@pytest.mark.slow
def test_tables_mark_and_claims_refuse_a_cell_still_improving(tiny_run, tmp_path):
    from analysis.claims import budget_decided
    from analysis.run import load_run
    from analysis.tables import comparison, write_tables

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run, run_dir, ignore=shutil.ignore_patterns("report", "tune"))
    results = pd.read_csv(run_dir / "results.csv")
    shake = results[(results["method"] == "shake") & (results["status"] == "completed")]
    assert len(shake) == 2
    # SHAKE's students end 9 and 10 points above their previous epoch; every other curve is
    # flattened to a rise of 0.1 an epoch, so only SHAKE's cell is the budget's.
    epochs = pd.read_csv(run_dir / "epochs.csv")
    last = epochs.groupby("trial_id")["epoch"].transform("max")
    epochs["test_acc"] = 40.0 + 0.1 * epochs["epoch"]
    for bump, trial in zip((9.0, 10.0), shake["trial_id"], strict=True):
        epochs.loc[(epochs["trial_id"] == trial) & (epochs["epoch"] == last), "test_acc"] += bump
    epochs.to_csv(run_dir / "epochs.csv", index=False)
    run = load_run(run_dir)

    long, _ = comparison(run, "test_acc")
    marked = long.set_index("column")["still_improving"]
    assert marked.to_dict() == {c: c == "SHAKE" for c in marked.index}
    row = long.set_index("column").loc["SHAKE"]
    assert row["late_gain"] == pytest.approx(9.7)  # (9.2 + 10.2) / 2, two epochs back
    write_tables(run)
    md = (run_dir / "report" / "tables" / "comparison_last.md").read_text()
    assert md.count(MARK) == 2  # the cell and the caption's rule
    assert f"{MARK} still improving" in md.splitlines()[0]
    csv = pd.read_csv(run_dir / "report" / "tables" / "comparison_last.csv")
    assert csv.set_index("column").loc["SHAKE", "still_improving"]

    refusal = budget_decided(long, "resnet14", "resnet8", {"SHAKE": "SHAKE", "KD": "KD"})
    assert refusal.startswith("not tested here: SHAKE's runs were still gaining 9.7 points")
    assert budget_decided(long, "resnet14", "resnet8", {"KD": "KD", "vanilla": "vanilla"}) == ""
