"""The sweep: its plan, its searcher, its run folder, and real sweeps through Ray Tune + Optuna."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest
from conftest import assert_usage_error, free_port, run_cli, run_mains
from sweeps import check_run_folder, read_csv, sweep, tiny_space

# ---------------------------------------------------------------- fast: no Ray started


def test_plan_puts_baselines_first_and_caps_at_max_trials(tmp_path):
    from study.load import load_study_file
    from study.plan import plan

    space = load_study_file(tiny_space(tmp_path))
    fixed, n_drawn = plan(space, None)
    assert [t.name for t in fixed] == ["vanilla-resnet14-resnet8-s0",
                                       "kd-resnet14-resnet8-s0"]
    assert n_drawn == 3
    assert plan(space, 4) == (fixed, 2)
    assert plan(space, 1) == (fixed[:1], 0)


def test_only_methods_that_use_the_teachers_weights_get_a_pretrained_teacher(tmp_path):
    from study.load import load_study_file
    from study.study_object import teacher_specs

    # DML trains a peer of the teacher's architecture from scratch: nothing to pretrain.
    path = tiny_space(tmp_path, baselines="[vanilla, dml]")
    path.write_text(path.read_text().split("space:\n")[0] + "resources: {max_concurrent: 2}\n")
    assert list(teacher_specs(load_study_file(path))) == []
    path.write_text(path.read_text().replace("[vanilla, dml]", "[dml, kd]"))
    assert list(teacher_specs(load_study_file(path))) == ["resnet14"]


def test_grid_draws_each_point_once(tmp_path):
    from study.load import load_study_file
    from study.plan import drawn_trial_count

    path = tiny_space(tmp_path)
    path.write_text(path.read_text().replace("num_samples: 3", "sampler: grid")
                    .replace("{type: loguniform, low: 0.1, high: 10}",
                             "{type: choice, values: [0.5, 1, 2]}"))
    assert drawn_trial_count(load_study_file(path)) == 6  # 3 lambdas x 2 depths


def test_tables_come_from_each_trials_history_and_end(tmp_path):
    """One row per trial and finished epoch, from the trial's own history; the status from
    its end record; a stopped trial's rows end at the epoch ASHA judged."""
    from study.runfolder import RunFolder
    from study.runfolder.tables import write_tables

    folder = RunFolder(tmp_path)
    for name in ("kd-a-b-s0", "kd-drawn-0001", "kd-drawn-0002"):
        (folder.tune_dir / name).mkdir(parents=True)
        config = {"trial_name": name, "role": "baseline", "method": "kd", "teacher": "a",
                  "student": "b", "seed": 0, "params": {}}
        (folder.tune_dir / name / "params.json").write_text(json.dumps(config))
        history = [{"epoch": e, "test_acc": 10.0 * e, "test_acc_best": 10.0 * e,
                    "train_s": 1.5, "eval_s": 0.5} for e in (1, 2, 3)]
        folder.history_file(name).parent.mkdir(exist_ok=True)
        folder.history_file(name).write_text(json.dumps(history))
    folder.record_end("kd-a-b-s0", "completed", {"epoch": 3, "test_acc": 30.0})
    folder.record_end("kd-drawn-0001", "stopped", {"epoch": 2, "test_acc": 20.0})
    rows = {r["trial_id"]: r for r in write_tables(folder, errors={"kd-drawn-0002"}).results}
    assert (rows["kd-a-b-s0"]["status"], rows["kd-a-b-s0"]["epochs"]) == ("completed", 3)
    assert rows["kd-a-b-s0"]["wall_s"] == 6.0
    assert (rows["kd-drawn-0001"]["status"], rows["kd-drawn-0001"]["epochs"]) == ("stopped", 2)
    assert rows["kd-drawn-0001"]["test_acc"] == 20.0
    assert rows["kd-drawn-0002"]["status"] == "error"
    epochs = read_csv(folder.epochs_csv)
    assert [(r["trial_id"], r["epoch"]) for r in epochs if r["trial_id"] != "kd-drawn-0002"] \
        == [("kd-a-b-s0", "1"), ("kd-a-b-s0", "2"), ("kd-a-b-s0", "3"),
            ("kd-drawn-0001", "1"), ("kd-drawn-0001", "2")]
    folder.record_end("kd-a-b-s0", "diverged", {"epoch": 1})  # the first end stands
    assert folder.end_of("kd-a-b-s0")["how"] == "completed"


def test_confirm_plans_the_best_completed_drawn_configs_of_each_pair_on_the_other_seeds(
        tmp_path):
    from study.load import load_study_file
    from study.plan import confirm_trials

    text = tiny_space(tmp_path).read_text().replace("seeds: [0]", "seeds: [0, 1, 2]")
    text = text.replace("  - {teacher: resnet14, student: resnet8}",
                        "  - {teacher: resnet14, student: resnet8}\n"
                        "  - {teacher: resnet20, student: resnet8}")
    (tmp_path / "s.yaml").write_text(text.replace("reduction_factor: 2",
                                                  "reduction_factor: 2\n  confirm_top: 2"))
    space = load_study_file(tmp_path / "s.yaml")

    def row(name, teacher, acc, status="completed", lam=0.5):
        return {"trial_id": name, "role": "drawn", "method": "sdkd", "teacher": teacher,
                "student": "resnet8", "seed": 0, "sdkd.lambda": lam, "sdkd.ffb_depth": 2,
                "test_acc": acc, "status": status}

    rows = [row("d1", "resnet14", 70.0), row("d2", "resnet14", 90.0, "stopped"),
            row("d3", "resnet14", 80.0, lam=0.123456789), row("d4", "resnet14", 80.0),
            row("d5", "resnet14", float("nan"), "diverged"), row("d6", "resnet20", 60.0),
            {**row("kd", "resnet14", 99.0), "role": "baseline"}]
    trials = confirm_trials(space, rows)
    # Per pair the top 2 completed by test_acc (a tie goes to the earlier trial); stopped,
    # diverged and baseline trials never; each on seeds 1 and 2, with its params exactly.
    assert [t.name for t in trials] == ["d3-s1", "d3-s2", "d4-s1", "d4-s2", "d6-s1", "d6-s2"]
    assert trials[0].params == {"sdkd.lambda": 0.123456789, "sdkd.ffb_depth": 2}
    assert {t.role for t in trials} == {"confirming"}
    assert trials[-1].teacher == "resnet20" and trials[-1].seed == 2
    off = space.model_copy(update={"search": space.search.model_copy(update={"confirm_top": 0})})
    assert confirm_trials(off, rows) == []


def test_dry_run_on_cifar100_plans_gpu_hours_without_ray(tmp_path):
    result = run_cli("study/sweep.py", "--space", "study/spaces/cifar100.yaml", "--dry-run",
                     "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # 10 baselines x 6 pairs x 3 seeds + 3 tuned methods x 32 drawn + the best of each pair
    # and tuned method on 2 more seeds
    assert "total trials: 312" in out, out
    assert "(45000 train / 5000 validation / 10000 test images)" in out, out
    # SDKD, DKD and SHAKE tuned with the same budget, the cost of each shown.
    for method in ("sdkd", "dkd", "shake"):
        assert re.search(rf"\n  {method} +32 drawn over .* \(\+12 confirming\), up to "
                         r"[\d.]+ PFLOP\n", out), out
    assert "GPU-hours" in out and "nothing was started" in out
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    assert "Started a local Ray" not in result.stderr
    # The literature's protocol per pair: DKD's beta (mdistiller), ShuffleV2's lr; teachers on
    # the students' 240-epoch step recipe.
    for pair, change in [("resnet32x4->resnet8x4", "dkd.beta=8"),
                         ("wrn_40_2->wrn_16_2", "dkd.beta=6"),
                         ("resnet56->resnet20", "dkd.beta=2, reviewkd.reviewkd_weight=0.6"),
                         ("resnet110->resnet32", "dkd.beta=2, reviewkd.reviewkd_weight=1.0"),
                         ("vgg13->vgg8", "dkd.beta=6"),
                         ("resnet32x4->ShuffleV2", "lr 0.01, dkd.beta=8, "
                          "reviewkd.reviewkd_weight=8.0")]:
        assert f"  pair {pair}: {change}\n" in out, out
    assert "teacher resnet56: 240 epochs, lr 0.05 (step x0.1 at 0.625, 0.75, 0.875)" in out


BAD_INVOCATIONS = [
    (["--resume", "--output", "{tmp}/none"], "no sweep to resume"),
    (["--max-trials", "0", "--space", "ablations.yaml"], "--max-trials 0"),
    ([], "--space is required"),
    (["--space", "{tmp}/missing.yaml"], "no such file"),
    (["--max-trials", "-1", "--space", "ablations.yaml"], "--max-trials -1"),
    (["--max-trials", "many", "--space", "ablations.yaml"], "invalid int value: 'many'"),
    (["--num-cpus", "0", "--space", "ablations.yaml"], "--num-cpus 0: give at least 1"),
    (["--num-cpus", "-3", "--space", "ablations.yaml"], "--num-cpus -3"),
    (["--num-gpus", "-1", "--space", "ablations.yaml"], "--num-gpus -1: give 0 or more"),
    (["--gpu-tflops", "nan", "--space", "ablations.yaml"], "--gpu-tflops nan"),
    (["--gpu-tflops", "inf", "--space", "ablations.yaml"], "--gpu-tflops inf"),
    (["--gpu-tflops", "0", "--space", "ablations.yaml"], "--gpu-tflops 0.0"),
    (["--address", "nohost", "--space", "ablations.yaml"], "give the cluster's head as HOST:PORT"),
    (["--address", "127.0.0.1:99999", "--space", "ablations.yaml"], "HOST:PORT"),
    (["--address", " ", "--space", "ablations.yaml"], "--address is empty"),
    (["--address", "127.0.0.1:6379", "--num-cpus", "2", "--space", "ablations.yaml"],
     "size the Ray started here"),
]


def test_bad_invocations_are_one_line_and_write_nothing(tmp_path):
    calls = [("study.sweep", [a.replace("{tmp}", str(tmp_path)) for a in args]
              + ["--cache-dir", str(tmp_path / "cache")]) for args, _ in BAD_INVOCATIONS]
    for result, (_, fragment) in zip(run_mains(calls), BAD_INVOCATIONS, strict=True):
        assert_usage_error(result, fragment)
    assert not any(tmp_path.iterdir())


def test_address_where_no_cluster_listens_is_one_line_in_seconds(tmp_path):
    """--address, or RAY_ADDRESS (Ray's own variable) standing for it; with --num-cpus, which
    sizes a Ray started here, RAY_ADDRESS is refused as --address is."""
    port = free_port()  # bound a moment ago, closed now: nothing listens there
    space, run = str(tiny_space(tmp_path)), str(tmp_path / "run")
    start = time.monotonic()
    flag, env, sized = run_mains(
        [("study.sweep", ["--space", space, "--output", run, "--address", f"127.0.0.1:{port}",
                          "--cache-dir", str(tmp_path / "cache")]),
         ("study.sweep", ["--space", space, "--output", run, "--cache-dir",
                          str(tmp_path / "cache")]),
         ("study.sweep", ["--space", space, "--output", run, "--num-cpus", "2"])],
        env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert time.monotonic() - start < 40
    assert_usage_error(flag, f"--address 127.0.0.1:{port}: no Ray cluster answers there")
    assert_usage_error(env, f"RAY_ADDRESS 127.0.0.1:{port}: no Ray cluster answers there")
    assert "ray start --head" in flag.stderr and "leave RAY_ADDRESS out" in env.stderr
    assert_usage_error(sized, "a cluster (RAY_ADDRESS) has its own: leave them out, or unset "
                              "RAY_ADDRESS")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # nothing written


def test_existing_run_needs_resume_and_the_same_space(tmp_path):
    from study.load import load_study_file
    from study.runfolder import RunFolder

    path = tiny_space(tmp_path)
    folder = RunFolder(tmp_path / "run")
    folder.write_space(load_study_file(path).model_dump(mode="json"))
    before = sorted(p.name for p in folder.root.iterdir())
    result = sweep("--space", str(path), "--output", str(folder.root), cache=tmp_path / "c")
    assert_usage_error(result, "already holds this sweep; pass --resume")
    other = tiny_space(tmp_path, epochs=5)
    result = sweep("--space", str(other), "--output", str(folder.root), "--resume",
                   cache=tmp_path / "c")
    assert_usage_error(result, "differs from")
    assert sorted(p.name for p in folder.root.iterdir()) == before  # nothing written


# ---------------------------------------------------------------- slow: real sweeps



@pytest.mark.slow
def test_sweep_end_to_end_through_ray_tune_optuna_and_asha(tiny_run):
    import optuna

    from study.load import load_study_file

    run, result = tiny_run.run, tiny_run.result
    # It joined the running cluster given by --address (`ray start --head`, the session's).
    assert "Started a local Ray instance" not in result.stderr + (run / "ray.log").read_text()
    results = check_run_folder(run, epochs=3, expected_trials=12)
    assert "Best drawn SDKD configurations" in result.stdout and "Baselines" in result.stdout
    assert f"report   {run / 'report' / 'index.html'}" in result.stdout
    assert load_study_file(run / "space.yaml") == load_study_file(tiny_run.space)
    fixed = Counter((r["method"], r["seed"]) for r in results if r["role"] == "baseline")
    assert fixed == {(m, s): 1 for m in ("vanilla", "kd", "shake", "sdkd") for s in "01"}

    drawn = [r for r in results if r["role"] == "drawn"]
    assert len(drawn) == 3 and all(r["method"] == "sdkd" for r in drawn)
    for r in drawn:  # ASHA stops a drawn trial only at a rung, never before its grace period
        assert r["status"] == "completed" or int(r["epochs"]) >= 1
    # The best completed drawn configuration ran again on the other seed, with the same params.
    best = max((r for r in drawn if r["status"] == "completed"),
               key=lambda r: float(r["test_acc"]))
    (confirm,) = [r for r in results if r["role"] == "confirming"]
    assert confirm["trial_id"] == f"{best['trial_id']}-s1" and confirm["seed"] == "1"
    assert confirm["status"] == "completed"
    assert (confirm["sdkd.lambda"], confirm["sdkd.ffb_depth"]) == \
        (best["sdkd.lambda"], best["sdkd.ffb_depth"])
    assert (run / "confirm" / confirm["trial_id"] / "params.json").is_file()
    assert "Best drawn configurations on every seed" in result.stdout
    rows = read_csv(run / "epochs.csv")
    vanilla = [float(r["train_loss"]) for r in rows
               if r["trial_id"] == "vanilla-resnet14-resnet8-s0"]
    assert vanilla[-1] < vanilla[0]  # it learns
    fixed_acc = {r["method"]: float(r["test_acc"]) for r in results if r["role"] == "baseline"}
    assert fixed_acc["vanilla"] > 15.0  # above chance (10 classes)

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'optuna.db'}")
    assert len(study.trials) == 3  # baselines never reach Optuna
    told = sorted((t.params["sdkd.lambda"], t.params["sdkd.ffb_depth"]) for t in study.trials)
    written = sorted((float(r["sdkd.lambda"]), int(r["sdkd.ffb_depth"])) for r in drawn)
    assert told == written  # CSV keeps floats exactly (repr)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
