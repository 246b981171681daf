"""The validation split: held out of every training set (students' and teachers'), the same
images for every trial, stratified; each epoch reports val_acc beside test_acc; the search
maximises it by default; a split that cannot hold every class is one line, exit 2."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_usage_error, run_cases_in_folders, run_cli

from sdkd_core.data import load_dataset
from sdkd_core.errors import UserError


def rows_of(x: torch.Tensor) -> set[bytes]:
    return {bytes(img.flatten().tolist()) for img in x}


@pytest.mark.parametrize("val_split, held", [(0.1, 200), (50, 50)])
def test_validation_images_are_held_out_stratified_and_the_same_for_every_seed(val_split, held):
    full = load_dataset("synthetic")
    a = load_dataset("synthetic", val_split=val_split, n_train=600, seed=0)
    b = load_dataset("synthetic", val_split=val_split, n_train=600, seed=1)
    assert len(a.val_y) == held and torch.equal(a.val_x, b.val_x)
    counts = a.val_y.bincount(minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.min() >= held // 10
    assert not torch.equal(a.train_x, b.train_x)  # each seed its own training subset ...
    for data in (a, b):  # ... never holding a validation image
        assert not rows_of(data.train_x) & rows_of(data.val_x)
    assert rows_of(a.val_x) <= rows_of(full.train_x)
    assert torch.equal(a.test_x, full.test_x)  # the test set is untouched


@pytest.mark.parametrize("val_split, fragment", [
    (5, "val_split=5 leaves 5 of synthetic's 10 classes without a validation image; give at "
        "least 10 images"),
    (0.001, "val_split=0.001 (2 images) leaves 8 of synthetic's 10 classes"),
    (2000, "val_split=2000 must leave images on both sides of synthetic's 2000 training"),
])
def test_a_split_that_cannot_hold_every_class_is_one_line(val_split, fragment):
    with pytest.raises(UserError) as err:
        load_dataset("synthetic", val_split=val_split)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_each_epoch_reports_validation_and_test_accuracy(tmp_path):
    from sdkd_core.recipe import Recipe
    from study.distill import run
    from study.runfolder.trials import PlannedTrial
    from study.sections import DatasetSection
    from study.teachers import TeacherCache, TeacherSpec

    data = DatasetSection(name="synthetic", n_test=200, val_split=200)
    rows = run(PlannedTrial("kd", "resnet14", "resnet8"), data, Recipe(epochs=2, batch_size=32),
               TeacherSpec(data, "resnet14", Recipe(epochs=2)), TeacherCache(tmp_path),
               device="cpu", log=lambda _: None)
    for r in rows:
        assert {"val_acc", "val_acc_best", "val_loss", "test_acc"} <= r.keys()
    assert rows[-1]["val_acc"] > 40.0  # it learns, measured on images it never trained on
    assert rows[-1]["val_acc_best"] == max(r["val_acc"] for r in rows)
    card = next((tmp_path / "teachers").glob("*.json")).read_text()
    assert '"val_split": 200' in card  # the teacher held the same images out


SPACE = """\
name: val
dataset: {{name: synthetic, n_train: 512, n_test: 128{split}}}
pairs:
  - {{teacher: resnet14, student: resnet8}}
baselines: [kd]
{search}"""


BAD_SETTINGS = [
    ("", "search: {metric: val_acc}", "search.metric: val_acc needs validation images; set "
                                      "dataset.val_split"),
    (", val_split: 1.5", "", "dataset.val_split"),
    (", val_split: 0", "", "dataset.val_split"),
]


def write_bad(folder, split: str, search: str) -> list[str]:
    path = folder / "val.yaml"
    path.write_text(SPACE.format(split=split, search=search))
    return ["--space", str(path), "--dry-run"]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Every bad setting through `sweep.py --dry-run`, in one process."""
    return run_cases_in_folders(tmp_path_factory, "study.sweep",
                                [((split, search), fragment)
                                 for split, search, fragment in BAD_SETTINGS],
                                lambda folder, args: write_bad(folder, *args))


@pytest.mark.parametrize("case", range(len(BAD_SETTINGS)),
                         ids=[f"{s}-{q}-{f}" for s, q, f in BAD_SETTINGS])
def test_bad_validation_settings_are_one_line(refusals, case):
    _, result = refusals[case]
    assert_usage_error(result, BAD_SETTINGS[case][2])


def test_the_search_maximises_validation_accuracy_where_there_is_a_split(tmp_path):
    from study.load import load_study_file

    path = tmp_path / "val.yaml"
    path.write_text(SPACE.format(split=", val_split: 0.1", search=""))
    assert load_study_file(path).metric == "val_acc"
    path.write_text(SPACE.format(split="", search=""))
    assert load_study_file(path).metric == "test_acc"


def test_distill_refuses_a_split_too_small_in_one_line(tmp_path):
    result = run_cli("study/distill.py", "--dataset", "synthetic", "--val-split", "3",
                     "--epochs", "1", "--output", str(tmp_path / "out"),
                     "--cache-dir", str(tmp_path / "cache"))
    assert_usage_error(result, "val_split=3 leaves 7 of synthetic's 10 classes")
    result = run_cli("study/distill.py", "--val-split", "1.5", "--output", str(tmp_path / "o"))
    assert_usage_error(result, "--val-split")


def test_the_tuned_configuration_is_the_validation_argmax_even_where_test_disagrees():
    """A planted configuration wins on the test set and loses on validation: it is not the
    one chosen, and the chosen one is reported with its test accuracy."""
    import pandas as pd

    from analysis.selection import tuned_config

    rows = [("drawn", 1.0, 80.0, 70.0), ("drawn", 2.0, 75.0, 90.0),  # 2.0: planted
            ("confirming", 1.0, 81.0, 71.0), ("confirming", 2.0, 74.0, 91.0)]
    search = pd.DataFrame(rows, columns=["role", "sdkd.lambda", "val_acc", "test_acc"])
    chosen = tuned_config(search, "test_acc", ["sdkd.lambda"])
    assert set(chosen["sdkd.lambda"]) == {1.0}
    assert sorted(chosen["test_acc"]) == [70.0, 71.0]
    without = tuned_config(search.drop(columns="val_acc"), "test_acc", ["sdkd.lambda"])
    assert set(without["sdkd.lambda"]) == {2.0}  # no split: the test set decides (and says so)


def test_confirming_runs_go_to_the_validation_best_draw(tmp_path):
    from study.load import load_study_file
    from study.plan import confirm_trials

    path = tmp_path / "val.yaml"
    path.write_text(SPACE.format(split=", val_split: 0.1", search="search: {methods: [kd]}\n"
                                 "space:\n  kd.temperature: {type: choice, values: [2, 4]}\n"
                                 "seeds: [0, 1]"))
    space = load_study_file(path)
    rows = [{"trial_id": f"kd-drawn-000{i}", "role": "drawn", "status": "completed",
             "method": "kd", "teacher": "resnet14", "student": "resnet8", "seed": 0,
             "kd.temperature": t, "val_acc": v, "test_acc": x}
            for i, (t, v, x) in enumerate([(2, 60.0, 90.0), (4, 70.0, 50.0)], 1)]
    (confirm,) = confirm_trials(space, rows)
    assert confirm.params == {"kd.temperature": 4} and confirm.seed == 1
