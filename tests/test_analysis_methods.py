"""The analysis is method-generic: every method's label, heads and schedule marks reach the
tables, learning curves and Grad-CAM, on run folders written without a sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


def fake_run(root: Path, method: str, baselines: list[str], cells: dict, space: dict,
             plugins: tuple[str, ...] = ()) -> Path:
    """A run folder without a sweep: study.json and results.csv (and epochs.csv, 4 epochs a
    trial rising to the trial's accuracy). `cells`: {(role, method, params): accuracies by seed}.
    """
    import json

    root.mkdir()
    file = {"name": "fake", "dataset": {"name": "cifar100"}, "recipe": {"epochs": 4},
            "pairs": [{"teacher": "resnet56", "student": "resnet20"}], "baselines": baselines,
            "plugins": list(plugins), "seeds": [0, 1], "search": {"methods": [method]},
            "space": space}
    (root / "study.json").write_text(json.dumps({
        "format": 1, "name": "fake", "space": file, "subject": method,
        "tuned_methods": [method], "baselines": baselines, "seeds": [0, 1], "search_seed": 0,
        "metric": "test_acc", "mode": "max", "epochs": 4, "draws": {method: 2},
        "asha_first_rung": 2, "executor": "in_trial"}))
    rows, epochs = [], []
    for (role, name, params), accuracies in cells.items():
        for seed, acc in enumerate(accuracies):
            tag = "-".join(f"{v}" for v in dict(params).values())
            row = {"trial_id": f"{name}-{role}{tag}-s{seed}", "role": role, "method": name,
                   "teacher": "resnet56", "student": "resnet20", "seed": seed, **dict(params),
                   "test_acc": acc, "test_acc_best": acc + 0.5, "epochs": 4,
                   "status": "completed"}
            rows.append(row)
            epochs += [{**row, "epoch": e, "test_acc": acc * e / 4, "test_acc_peer": acc - e}
                       for e in range(1, 5)]
    pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
    pd.DataFrame(epochs).to_csv(root / "epochs.csv", index=False)
    return root


DKD_CELLS = {
    ("baseline", "vanilla", ()): [70.0, 71.0],
    ("baseline", "kd", ()): [72.0, 73.5],
    ("baseline", "dkd", ()): [74.0, 75.0],
    ("drawn", "dkd", (("dkd.beta", 2.0), ("dkd.warmup_epochs", 1.0))): [73.0, 73.4],
    ("drawn", "dkd", (("dkd.beta", 8.0), ("dkd.warmup_epochs", 2.0))): [76.0, 77.0],
}


def test_tables_name_the_runs_own_method_by_its_label(tmp_path):
    from scipy import stats

    from analysis.run import load_run
    from analysis.tables import comparison, write_tables

    space = {"dkd.beta": {"type": "choice", "values": [2, 8]},
             "dkd.warmup_epochs": {"type": "choice", "values": [1, 2]}}
    run = load_run(fake_run(tmp_path / "run", "dkd", ["kd", "vanilla", "dkd"], DKD_CELLS, space))
    assert (run.method, run.label) == ("dkd", "DKD")
    long, tests = comparison(run)
    cells = {r["column"]: r for _, r in long.iterrows()}
    assert list(cells) == ["vanilla", "KD", "DKD (defaults)", "DKD (tuned)"]  # registry order
    assert cells["DKD (tuned)"]["mean"] == pytest.approx(76.5)  # the better drawn configuration
    assert cells["DKD (defaults)"]["mean"] == pytest.approx(74.5)
    # The Δ row: the first baseline of the space besides DKD (kd).
    assert {r["reference"] for r in cells.values()} == {"KD"}
    assert cells["vanilla"]["delta"] == pytest.approx(70.5 - 72.75)
    # Welch's test: only DKD's cells, each against every other column (its two cells once),
    # Holm-adjusted over those five; the mark is against the strongest other method (KD).
    tested = {c: r for c, r in cells.items() if r["versus"]}
    assert list(tested) == ["DKD (defaults)", "DKD (tuned)"]
    assert {r["versus"] for r in tested.values()} == {"KD"}
    seeds = {"vanilla": [70.0, 71.0], "KD": [72.0, 73.5], "DKD (defaults)": [74.0, 75.0],
             "DKD (tuned)": [76.0, 77.0]}
    made = [("DKD (defaults)", "vanilla"), ("DKD (defaults)", "KD"),
            ("DKD (defaults)", "DKD (tuned)"), ("DKD (tuned)", "vanilla"), ("DKD (tuned)", "KD")]
    raw = [stats.ttest_ind(seeds[a], seeds[b], equal_var=False).pvalue for a, b in made]
    ranked = sorted(raw)  # Holm by hand: the k-th smallest times (5 - k), running maximum
    steps = np.maximum.accumulate([min(1.0, (5 - k) * p) for k, p in enumerate(ranked)])
    holm = {pair: steps[ranked.index(p)] for pair, p in zip(made, raw, strict=True)}
    assert len(tests) == 5
    for _, t in tests.iterrows():
        key = (t["column"], t["versus"])
        assert t["p_holm"] == pytest.approx(holm[key])
        assert t["diff"] == pytest.approx(np.mean(seeds[key[0]]) - np.mean(seeds[key[1]]))
        assert t["ci_low"] < t["diff"] < t["ci_high"]
    assert tested["DKD (tuned)"]["p_value"] == pytest.approx(holm[("DKD (tuned)", "KD")])
    assert cells["DKD (tuned)"]["best"] and not cells["KD"]["best"]
    assert cells["DKD (defaults)"]["published"] == 71.97  # the DKD paper's resnet56 → resnet20
    paths = write_tables(run, tmp_path / "tables")
    md = (tmp_path / "tables" / "comparison_last.md").read_text()
    header = md.split("\n\n")[1].splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "pair", "vanilla", "KD", "DKD (defaults)", "DKD (tuned)"]  # no teacher card kept
    assert "DKD vs the strongest other baseline" in md and "| Δ vs KD " in md
    assert "| published " in md and "71.97" in md
    for path in paths:
        assert "SDKD" not in path.read_text(), path


def test_learning_curves_show_the_methods_heads_and_schedule_marks(tmp_path, monkeypatch):
    from analysis import plots
    from analysis.run import load_run

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out, stem: figures.append(fig) or [])

    def legend(run) -> tuple[list[str], list[float]]:
        figures.clear()
        plots.learning_curves(run, tmp_path)
        ax = figures[0].axes[0]
        marks = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
        # The convergence mark is checked in test_convergence; here the names and marks.
        return [t.get_text().removesuffix(" † still improving")
                for t in ax.get_legend().get_texts()], marks

    dkd = load_run(fake_run(tmp_path / "dkd", "dkd", ["kd", "vanilla", "dkd"], DKD_CELLS, {
        "dkd.beta": {"type": "choice", "values": [2, 8]}}))
    labels, marks = legend(dkd)
    assert labels == ["vanilla student (seed mean)", "KD student (seed mean)",
                      "DKD (defaults) student (seed mean)",
                      "DKD student (best trial, dkd-drawn8.0-2.0-s1)",
                      "DKD warm-up end (after epoch 2)"]  # that trial's warmup_epochs
    assert marks == [2.5]
    dml = load_run(fake_run(tmp_path / "dml", "dml", ["vanilla"], {
        ("baseline", "vanilla", ()): [70.0, 71.0],
        ("drawn", "dml", (("dml.temperature", 2.0),)): [72.0, 73.0]},
        {"dml.temperature": {"type": "choice", "values": [2]}}))
    labels, marks = legend(dml)
    assert labels == ["vanilla student (seed mean)", "DML student (best trial, dml-drawn2.0-s1)",
                      "DML peer (same trial)"] and marks == []


def test_a_runs_plugin_methods_are_registered_before_labels_are_read(tmp_path, monkeypatch):
    from analysis.run import load_run
    from analysis.tables import comparison
    from sdkd_core import distillers
    from sdkd_core.errors import UserError

    monkeypatch.setattr(distillers, "METHODS", dict(distillers.METHODS))  # undone afterwards
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "analysis_plugin_kd.py").write_text(
        "from sdkd_core.distillers import register\n"
        "from sdkd_core.distillers.kd import KD\n\n\n"
        "@register\nclass MyKD(KD):\n    name = 'mykd'\n    label = 'MyKD'\n")
    cells = {("baseline", "kd", ()): [72.0, 73.0], ("drawn", "mykd", ()): [74.0, 75.0]}
    run = load_run(fake_run(tmp_path / "run", "mykd", ["kd"], cells, {},
                            plugins=("analysis_plugin_kd",)))
    assert list(comparison(run)[0]["column"]) == ["KD", "MyKD (tuned)"]
    missing = fake_run(tmp_path / "missing", "mykd", ["kd"], cells, {},
                       plugins=("absent_plugin",))
    with pytest.raises(UserError, match="study.json: plugins: plugin 'absent_plugin' not found"):
        load_run(missing)


def test_every_methods_heads_give_grad_cam_maps_and_features(synthetic):
    from analysis.gradcam import cam_maps, pooled_features
    from sdkd_core.distillers import METHODS, build_distiller
    from sdkd_core.models import build_model

    torch.manual_seed(0)
    x = (synthetic.test_x[:8].float() - 128) / 64
    y = synthetic.test_y[:8]
    with_heads = [name for name, cls in METHODS.items() if cls.heads]
    assert {"sdkd", "shake", "dml"} <= set(with_heads)
    for name in with_heads:
        method = build_distiller(name, build_model("resnet8", 10, 1),
                                 build_model("resnet14", 10, 1)).eval()
        for key in method.heads:
            net = method.extra_network(key)
            maps, feats = cam_maps(net, x, y), pooled_features(net, x)
            assert maps.shape == (8, 28, 28) and np.isfinite(maps).all(), (name, key)
            assert feats.ndim == 2 and len(feats) == 8 and np.isfinite(feats).all(), (name, key)
