"""Early stopping that compares like with like: ASHA's first rung lies after the latest epoch
from which a configuration the space can draw changes its student (SDKD: its phase boundary),
so no rung ranks students that are still the same network."""

from __future__ import annotations

import pytest
from conftest import run_cli

SPACE = """\
name: fair
dataset: {{name: synthetic, n_train: 512, n_test: 128}}
recipe: {{epochs: 4, batch_size: 32}}
pairs:
  - {{teacher: resnet14, student: resnet8{pair}}}
search: {{methods: [{method}], grace_period: {grace}}}
space:
{space}
"""
SDKD_SPACE = "  sdkd.lambda: {type: loguniform, low: 0.1, high: 10}\n"


def grace_of(tmp_path, method="sdkd", grace=1, space=SDKD_SPACE, pair=""):
    from study.load import load_study_file
    from study.plan import asha_grace_period

    path = tmp_path / "fair.yaml"
    path.write_text(SPACE.format(method=method, grace=grace, space=space, pair=pair))
    return asha_grace_period(load_study_file(path))


@pytest.mark.parametrize("space, pair, grace, expected", [
    # phase boundary up to 0.8 of 4 epochs: k turns 1 at epoch round(3.2) = 3 (from 0)
    ("  sdkd.phase_boundary: {type: uniform, low: 0.2, high: 0.8}\n", "", 1, 4),
    ("  sdkd.phase_boundary: {type: uniform, low: 0.2, high: 0.5}\n", "", 1, 3),
    ("  sdkd.phase_boundary: {type: choice, values: [0.25, 0.5]}\n", "", 3, 3),
    (SDKD_SPACE, "", 1, 3),  # the default boundary, 0.5: epoch 2
    (SDKD_SPACE, ", settings: {sdkd.phase_boundary: 0.75}", 2, 4),  # a pair's own boundary
    (SDKD_SPACE, ", settings: {sdkd.phase_boundary: 0.1}", 2, 2),  # already after it
])
def test_the_first_rung_follows_the_latest_phase_boundary(tmp_path, space, pair, grace,
                                                          expected):
    got, why = grace_of(tmp_path, space=space, pair=pair, grace=grace)
    assert got == expected
    assert (why is None) == (expected == grace)
    if why:
        assert f"moved from epoch {grace} (search.grace_period) to {expected}" in why


def test_a_method_that_changes_its_student_from_the_start_keeps_its_grace_period(tmp_path):
    space = "  kd.temperature: {type: choice, values: [2, 4]}\n"
    assert grace_of(tmp_path, method="kd", space=space) == (1, None)


def test_dry_run_says_why_the_first_rung_moved(tmp_path):
    path = tmp_path / "fair.yaml"
    path.write_text(SPACE.format(method="sdkd", grace=1, pair="", space=(
        "  sdkd.phase_boundary: {type: uniform, low: 0.2, high: 0.8}\n")))
    result = run_cli("study/sweep.py", "--space", str(path), "--dry-run",
                     "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert ("ASHA's first rung moved from epoch 1 (search.grace_period) to 4: SDKD students of "
            "some configurations the space draws are the same network until epoch 3") \
        in result.stdout, result.stdout


@pytest.mark.slow
def test_no_drawn_trial_is_stopped_before_its_own_phase_boundary(tiny_run):
    import csv

    from sdkd_core.distillers import get_method, method_config

    with open(tiny_run.run / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "drawn"]
    assert rows
    for r in rows:
        config = method_config(r["method"], {k: r[k] for k in ("sdkd.lambda", "sdkd.ffb_depth")})
        first = get_method(r["method"]).first_epoch_configured(config, 3)
        assert r["status"] == "completed" or int(r["epochs"]) > first, r


def test_the_demos_first_rung_lies_after_every_drawn_boundary_and_before_the_last_epoch():
    """ablations.yaml: no drawn SDKD student is ranked before its phase boundary, the grace
    period is valid as written (nothing to move), and ASHA still has a rung to stop at."""
    from conftest import ROOT

    from study.load import load_study_file
    from study.plan import asha_grace_period, latest_unconfigured_epoch

    space = load_study_file(ROOT / "ablations.yaml")
    grace, moved = asha_grace_period(space)
    assert moved is None and grace == space.search.grace_period
    assert latest_unconfigured_epoch(space, "sdkd") < grace < space.recipe.epochs
    assert space.tuned_methods == ["sdkd", "shake", "kd"]
    assert space.dataset.val_split is not None and len(space.seeds) >= 2
    assert space.metric == "val_acc"
