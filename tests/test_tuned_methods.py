"""Several tuned methods in one sweep, each with the same budget: the space names them
(`search.methods`) with each its own distributions; what cannot be equal is refused in one
line; --dry-run shows each method's draws and cost."""

from __future__ import annotations

import pytest
from conftest import SWEEP_TEACHERS, assert_usage_error, run_cases_in_folders, run_cli
from sweeps import assert_tracked, mlflow_runs, read_csv

SPACE = """\
name: fair
dataset: {{name: synthetic, n_train: 512, n_test: 128, val_split: 0.1}}
recipe: {{epochs: 4, batch_size: 32}}
pairs:
  - {{teacher: resnet14, student: resnet8}}
baselines: [vanilla]
seeds: [0, 1]
search: {{{search}}}
space:
{space}"""
KEYS = """\
  sdkd.lambda: {type: choice, values: [0.5, 2.0]}
  shake.beta: {type: choice, values: [0.5, 1.0]}
"""


def write(tmp_path, search="methods: [sdkd, shake], sampler: grid", space=KEYS):
    path = tmp_path / "fair.yaml"
    path.write_text(SPACE.format(search=search, space=space))
    return path


def test_each_tuned_method_gets_the_same_draws_and_a_study_of_its_own(tmp_path):
    from study.load import load_study_file
    from study.plan import drawn_trial_count
    from study.runfolder import RunFolder
    from study.search import study_name
    from study.study_object import make_study

    space = load_study_file(write(tmp_path))
    assert space.tuned_methods == ["sdkd", "shake"]
    assert drawn_trial_count(space) == 4
    study = make_study(space, RunFolder(tmp_path / "run"), tmp_path / "cache")
    assert study.draws == {"sdkd": 2, "shake": 2} and study.subject == "sdkd"
    assert [study_name(study, m) for m in space.tuned_methods] == ["fair-sdkd", "fair-shake"]
    assert space.trained_methods() == ["vanilla", "sdkd", "shake"]


BAD = [
    ("methods: [sdkd, shak]", KEYS, "search.methods: unknown method 'shak'"),
    ("methods: [sdkd, shake, sdkd]", KEYS,
     "search.methods: ['sdkd', 'shake', 'sdkd'] has duplicates"),
    ("method: kd", KEYS, "search: write methods: [kd] instead of method: kd (search.methods is "
                         "a list; its first is the run's subject)"),
    ("methods: [sdkd]", KEYS, "space.shake.beta: the search tunes sdkd only; use their keys, or "
                              "add shake to search.methods"),
    ("methods: [sdkd, shake, kd]", KEYS, "search.methods: kd has no space.kd.* distributions"),
    ("methods: [sdkd, shake], sampler: grid",
     KEYS + "  sdkd.ffb_depth: {type: choice, values: [1, 2]}\n",
     "search.sampler: grid sizes differ (sdkd 4, shake 2 points)"),
]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Every BAD space through `sweep.py --dry-run`, in one process."""
    return run_cases_in_folders(
        tmp_path_factory, "study.sweep", [((search, space), fragment)
                                          for search, space, fragment in BAD],
        lambda folder, args: ["--space", str(write(folder, *args)), "--dry-run"])


@pytest.mark.parametrize("case", range(len(BAD)), ids=[b[2][:30] for b in BAD])
def test_what_cannot_be_tuned_equally_is_one_line(refusals, case):
    _, result = refusals[case]
    assert_usage_error(result, BAD[case][2])


def test_dry_run_shows_each_tuned_methods_draws_and_cost(tmp_path):
    result = run_cli("study/sweep.py", "--space", str(write(tmp_path)), "--dry-run",
                     "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "drawn trials: 4 (grid; scheduler asha; each tuned method the same budget)" in out
    assert "  sdkd     2 drawn over sdkd.lambda (+1 confirming), up to " in out, out
    assert "  shake    2 drawn over shake.beta (+1 confirming), up to " in out, out
    assert "total trials: 8" in out  # 2 vanilla, 2 x 2 drawn, 2 x 1 confirming
    # Drawing a key SDKD's claims compare (proxy_arch): each of its values is confirmed too.
    keys = KEYS.replace("sdkd.lambda: {type: choice, values: [0.5, 2.0]}",
                        "sdkd.proxy_arch: {type: choice, values: [student, teacher]}")
    result = run_cli("study/sweep.py", "--space", str(write(tmp_path, space=keys)), "--dry-run",
                     "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "  sdkd     2 drawn over sdkd.proxy_arch (+3 confirming), up to " in result.stdout
    assert "and of each value a claim compares," in result.stdout


SWEEP = """\
name: two
dataset: {name: synthetic, n_train: 384, n_test: 128, val_split: 100}
recipe: {epochs: 3, batch_size: 32}
teacher: {epochs: 1}
pairs:
  - {teacher: resnet14, student: resnet8}
baselines: [vanilla]
seeds: [0, 1]
search: {methods: [sdkd, kd], sampler: grid, grace_period: 1, reduction_factor: 2}
space:
  sdkd.proxy_arch: {type: choice, values: [student, teacher]}
  kd.temperature: {type: choice, values: [2.0, 4.0]}
resources: {max_concurrent: 2}
"""


@pytest.fixture(scope="module")
def two_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("two")
    (base / "two.yaml").write_text(SWEEP)
    # Tracked by flags: MLflow in the run folder, W&B offline (no network, no login).
    result = run_cli("study/sweep.py", "--space", str(base / "two.yaml"), "--output",
                     str(base / "run"), "--cache-dir", str(SWEEP_TEACHERS), "--mlflow",
                     "--wandb", env={"WANDB_MODE": "offline", "WANDB_API_KEY": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "run", result


@pytest.mark.slow
def test_mlflow_and_wandb_track_each_trial_and_the_report(two_run):
    """--mlflow: a parent run with the study file and the report, a child per trial with every
    epoch's val_acc and test_acc; --wandb (offline): a run file per trial and one for the
    study, and how to upload them."""
    run, result = two_run
    assert_tracked(run, "two", metrics=("val_acc", "test_acc"))
    parent, _, client = mlflow_runs(run, "two")
    assert parent.data.params["dataset.val_split"] == "100"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"space.yaml", "study.json", "report"} <= artifacts, artifacts
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/index.html" in report, report
    offline = sorted((run / "tracking" / "wandb" / "wandb").glob("offline-run-*"))
    ids = {p.name.split("-", 3)[3] for p in offline}  # offline-run-<time>-<run id>
    trials = {r["trial_id"] for r in read_csv(run / "results.csv")}
    assert len(offline) == len(trials) + 1, [p.name for p in offline]  # and the study's run
    key = next(i for i in ids if i.endswith("-study")).removesuffix("-study")
    assert ids == {f"{key}-study", *(f"{key}-trial-{t}" for t in trials)}, ids
    assert all(list(p.glob("*.wandb")) for p in offline)
    assert "wandb sync" in result.stdout and "mlflow ui --backend-store-uri" in result.stdout


@pytest.mark.slow
def test_two_tuned_methods_get_equal_budgets_and_studies_and_columns(two_run):
    import csv

    import optuna

    run, result = two_run
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    drawn = {m: [r for r in rows if r["role"] == "drawn" and r["method"] == m]
             for m in ("sdkd", "kd")}
    assert [len(d) for d in drawn.values()] == [2, 2]  # equal sample counts
    # Equal epochs before ASHA: its first rung for both, moved from epoch 1 to after SDKD's
    # phase boundary (0.5 of 3 epochs), here the last epoch.
    assert "ASHA's first rung moved from epoch 1 (search.grace_period) to 3" in result.stdout
    for d in drawn.values():
        assert all(int(r["epochs"]) == 3 for r in d)
    # The best of each method again on seed 1; for SDKD also the best of the other value of
    # sdkd.proxy_arch, which its claim (4) compares.
    confirmed = [r for r in rows if r["role"] == "confirming"]
    assert sorted((r["method"], r["seed"]) for r in confirmed) == \
        [("kd", "1"), ("sdkd", "1"), ("sdkd", "1")]
    assert {r["sdkd.proxy_arch"] for r in confirmed if r["method"] == "sdkd"} == \
        {"student", "teacher"}
    url = f"sqlite:///{run / 'optuna.db'}"
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(url)) == \
        ["two-kd", "two-sdkd"]
    for method in ("sdkd", "kd"):
        study = optuna.load_study(study_name=f"two-{method}", storage=url)
        assert {k.split(".")[0] for t in study.trials for k in t.params} == {method}
    assert "Best drawn SDKD configurations" in result.stdout
    assert "Best drawn KD configurations" in result.stdout
    md = (run / "report" / "tables" / "comparison_last.md").read_text()
    assert "SDKD (tuned)" in md and "KD (tuned)" in md
    assert "SDKD and KD each vs the strongest other baseline" in md
    for line in md.splitlines():
        if line.startswith("| resnet14"):
            assert line.count("(n=2)") == 3, line  # vanilla and both tuned columns: 2 seeds
    # Claim (1), SDKD (tuned) against KD (tuned) with the same budget: a verdict with the
    # numbers of the table's own test, unless a side was still improving at its last epoch
    # (the table's own convergence columns): then no verdict, and the gain says why.
    import pandas as pd

    claims = pd.read_csv(run / "report" / "claims.csv")
    beats = claims.iloc[0]
    table = pd.read_csv(run / "report" / "tables" / "comparison_last.csv")
    tuned = table[table["column"].isin(["SDKD (tuned)", "KD (tuned)"])]
    assert "SDKD (tuned)" in beats["numbers"] and "vs KD (tuned)" in beats["numbers"]
    if tuned["still_improving"].any():
        assert beats["verdict"] == "not tested here", beats
        assert "were still gaining" in beats["numbers"] and "give it more epochs" in \
            beats["numbers"], beats["numbers"]
    else:
        assert beats["verdict"] in ("supported", "not supported"), beats
        tests = pd.read_csv(run / "report" / "tables" / "tests_last.csv")
        test = tests[tests["column"].isin(["SDKD (tuned)", "KD (tuned)"])
                     & tests["versus"].isin(["SDKD (tuned)", "KD (tuned)"])].iloc[0]
        sign = 1 if test["column"] == "SDKD (tuned)" else -1
        assert f"{sign * test['diff']:+.2f} points" in beats["numbers"]
        assert f"p_Holm {test['p_holm']:.3g}" in beats["numbers"]
        assert (beats["verdict"] == "supported") == (sign * test["diff"] > 0
                                                     and test["p_holm"] < 0.05)
    # Claim (4): both proxy shapes ran on both seeds, so it has numbers, and a verdict unless a
    # side was still improving.
    shape = claims.iloc[3]
    assert shape["verdict"] in ("supported", "not supported") or (
        shape["verdict"] == "not tested here" and "were still gaining" in shape["numbers"]), shape
    assert "sdkd.proxy_arch=student" in shape["numbers"] and "(n=2) vs teacher" in shape["numbers"]


@pytest.mark.slow
def test_a_moved_run_folder_finds_its_mlflow_parent_again(two_run, tmp_path):
    """The store inside the run folder moves with it, and so does the name of its parent run
    (tracking/mlflow.json): reopened from the new place, the same parent, no new run."""
    import shutil

    from study.load import load_study_file
    from study.runfolder import RunFolder
    from study.study_object import make_study
    from study.tracking.mlflow_tracker import MlflowTracker

    run, _ = two_run
    moved = tmp_path / "moved"
    shutil.copytree(run / "tracking", moved / "tracking")
    shutil.copy(run / "space.yaml", moved / "space.yaml")
    parent, children, _ = mlflow_runs(run, "two")
    study = make_study(load_study_file(moved / "space.yaml"), RunFolder(moved), tmp_path / "c")
    tracker = MlflowTracker(study.file.tracking.mlflow, study)
    assert tracker.parent == parent.info.run_id
    assert sorted(tracker.children) == sorted(children)
    again, again_children, _ = mlflow_runs(moved, "two")  # still one parent, no new child
    assert again.info.run_id == parent.info.run_id and len(again_children) == len(children)
