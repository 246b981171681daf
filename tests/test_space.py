"""The space schema. A valid file loads; every malformed one is caught by the real sweep
command before anything runs: exit code 2 and one line naming the file, the key and the fix,
within 5 s, with no Ray imported and nothing written."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import OWN_RAY, ROOT, assert_usage_error, run_cli, tree

from study.load import load_study_file

VALID = """\
name: fmnist-ablations
dataset: {name: fashion_mnist, n_train: 10000}
recipe: {epochs: 8, lr: 0.05, batch_size: 64}
teacher: {epochs: 4}
pairs:
  - {teacher: resnet20, student: resnet8}
  - {teacher: resnet32, student: resnet8}
baselines: [vanilla, kd, dml, shake]
seeds: [0, 1]
search: {sampler: tpe, num_samples: 6, scheduler: asha, grace_period: 2}
space:
  sdkd.lambda: {type: loguniform, low: 0.1, high: 10}
  sdkd.phase_boundary: {type: uniform, low: 0.2, high: 0.8}
  sdkd.ffb_depth: {type: choice, values: [1, 2, 3]}
  sdkd.fuse_stage: {type: int, low: 1, high: 2}
resources: {num_workers: 1, cpus_per_worker: 1, max_concurrent: 1}
"""


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_space_loads_with_defaults(tmp_path):
    space = load_study_file(write(tmp_path, VALID))
    assert space.name == "fmnist-ablations" and len(space.pairs) == 2
    assert space.recipe_obj().epochs == 8 and space.recipe_obj().schedule == "cosine"
    assert space.space["sdkd.lambda"].low == 0.1
    assert space.resources.use_gpu is False and space.metric == "test_acc"


PAIR = "  - {teacher: resnet20, student: resnet8}"
PAIR_WITH = "  - {{teacher: resnet20, student: resnet8, {}}}"


def mutate(old, new):
    assert old in VALID, old
    return VALID.replace(old, new)



def bomb() -> str:
    """Thirteen levels of ten aliases each: 10**13 nodes once expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 13)]
    return "\n".join(lines) + "\n"


# (case, file contents (str, bytes, None for no file, "<dir>" for a folder), fragments the one
# line must hold: the key and the fix). Each line must also name the file.
BAD = [
    ("yaml-syntax", "name: [unclosed", ["YAML syntax error at line 1", "column"]),
    ("scalar-document", "just a string", ["the file is a str", "a mapping with at least"]),
    ("list-for-mapping", mutate("recipe: {epochs: 8, lr: 0.05, batch_size: 64}", "recipe: [8]"),
     ["recipe:", "should be a valid dictionary"]),
    ("scalar-for-mapping", mutate("teacher: {epochs: 4}", "teacher: 4"),
     ["teacher:", "should be a valid dictionary"]),
    ("unknown-key", mutate("seeds: [0, 1]", "seeds: [0, 1]\nsede: 3"),
     ["unknown key 'sede'", "did you mean 'seeds'?"]),
    ("unknown-nested-key", mutate("num_samples: 6", "num_sample: 6"),
     ["unknown key 'search.num_sample'", "did you mean 'num_samples'?"]),
    ("wrong-type", mutate("num_samples: 6", "num_samples: many"),
     ["search.num_samples", "should be a valid integer", "'many'"]),
    ("epochs-zero", mutate("epochs: 8,", "epochs: 0,"), ["recipe:", "epochs=0 must be at least 1"]),
    ("lr-negative", mutate("lr: 0.05", "lr: -1"), ["recipe:", "lr=-1", "must be positive"]),
    ("low-above-high", mutate("low: 0.2, high: 0.8", "low: 0.8, high: 0.2"),
     ["space.sdkd.phase_boundary", "low=0.8 must be below high=0.2"]),
    ("loguniform-zero", mutate("low: 0.1, high: 10", "low: 0, high: 10"),
     ["space.sdkd.lambda", "loguniform needs low > 0"]),
    ("empty-choice", mutate("values: [1, 2, 3]", "values: []"),
     ["space.sdkd.ffb_depth.values", "at least 1 item"]),
    ("unknown-distribution", mutate("type: uniform", "type: normal"),
     ["space.sdkd.phase_boundary", "'type' must be one of choice, uniform"]),
    ("unknown-model", mutate("resnet20, student: resnet8}", "resnet20, student: resnet9}"),
     ["pairs[0].student", "unknown model 'resnet9'", "did you mean"]),
    ("unknown-method", mutate("[vanilla, kd, dml, shake]", "[vanilla, kdd]"),
     ["baselines", "unknown method 'kdd'", "did you mean"]),
    ("unknown-search-method", mutate("sampler: tpe", "methods: [sdk], sampler: tpe"),
     ["search.methods", "unknown method 'sdk'"]),
    ("unknown-dataset", mutate("name: fashion_mnist", "name: mnist"),
     ["unknown dataset 'mnist'", "fashion_mnist"]),
    ("unknown-sampler", mutate("sampler: tpe", "sampler: bayes"), ["search.sampler", "'tpe'"]),
    ("unknown-scheduler", mutate("scheduler: asha", "scheduler: hyperband"),
     ["search.scheduler", "'asha'"]),
    ("grid-over-range", mutate("sampler: tpe", "sampler: grid"),
     ["space.sdkd.lambda", "a grid needs finite values; use type: choice"]),
    ("phase-boundary-above-1", mutate("low: 0.2, high: 0.8", "low: 0.2, high: 1.5"),
     ["space.sdkd.phase_boundary", "sdkd.phase_boundary=1.5"]),
    ("ffb-depth-zero", mutate("values: [1, 2, 3]", "values: [0, 1]"),
     ["space.sdkd.ffb_depth", "sdkd.ffb_depth=0"]),
    ("fuse-stage-missing", mutate("low: 1, high: 2}", "low: 1, high: 5}"),
     ["space.sdkd.fuse_stage", "sdkd.fuse_stage=5 but resnet8 can fuse at stages 0..2; choose"]),
    ("num-samples-zero", mutate("num_samples: 6", "num_samples: 0"),
     ["search.num_samples", "greater than 0"]),
    ("gpu-where-none", mutate("num_workers: 1,", "num_workers: 1, use_gpu: true,"),
     ["resources.use_gpu", "no CUDA GPU", "set it to false"]),
    ("gpu-share-without-gpu", mutate("num_workers: 1,", "num_workers: 1, gpus_per_trial: 0.5,"),
     ["resources", "gpus_per_trial=0.5 needs use_gpu: true"]),
    ("duplicate-seeds", mutate("seeds: [0, 1]", "seeds: [0, 0]"),
     ["seeds", "has duplicates; list each seed once"]),
    ("unprefixed-space-key", mutate("sdkd.lambda:", "lambda:"),
     ["space.lambda", "keys are method settings like sdkd.lambda"]),
    ("missing-pairs", "name: x\n", ["'pairs' is required"]),
    ("missing-data", mutate("name: fashion_mnist,", "name: fashion_mnist, root: {tmp}/empty,"),
     ["dataset:", "Fashion-MNIST not found", "apt-get install dataset-fashion-mnist"]),
    ("different-sweep-in-output", mutate("epochs: 8,", "epochs: 9,"),
     ["--output", "holds a different sweep", "pass --output DIR for a new run folder"]),
    ("not-utf8", b"name: \xff\xfe\x00", ["not UTF-8 text", "save it as UTF-8"]),
    ("directory", "<dir>", ["is a directory", "pass a YAML space file"]),
    ("missing-file", None, ["no such file", "pass an existing space file"]),
    ("garbage-10MB", b"x" * (10 << 20), ["is not a space file", "limit"]),
    ("alias-bomb", bomb(), ["YAML aliases", "write the values out"]),
    # Non-finite numbers anywhere, repeats in lists that name things once, order where it counts.
    ("lr-nan", mutate("lr: 0.05", "lr: .nan"), ["recipe.lr", "nan is not a finite number"]),
    ("lr-inf", mutate("lr: 0.05", "lr: .inf"), ["recipe.lr", "inf is not a finite number"]),
    ("weight-decay-inf", mutate("lr: 0.05", "lr: 0.05, weight_decay: .inf"),
     ["recipe.weight_decay", "inf is not a finite number", "like 0.5"]),
    ("milestone-nan", mutate("lr: 0.05", "lr: 0.05, milestones: [0.5, .nan]"),
     ["recipe.milestones.1", "nan is not a finite number"]),
    ("milestones-repeated", mutate("lr: 0.05", "lr: 0.05, milestones: [0.5, 0.5]"),
     ["recipe:", "milestones=[0.5, 0.5] must be increasing fractions", "each once"]),
    ("milestones-unordered", mutate("lr: 0.05", "lr: 0.05, milestones: [0.75, 0.5]"),
     ["recipe:", "milestones=[0.75, 0.5] must be increasing", "like 0.5,0.75"]),
    ("reduction-factor-inf", mutate("num_samples: 6", "num_samples: 6, reduction_factor: .inf"),
     ["search.reduction_factor", "inf is not a finite number"]),
    ("cpus-nan", mutate("cpus_per_worker: 1", "cpus_per_worker: .nan"),
     ["resources.cpus_per_worker", "nan is not a finite number"]),
    ("loguniform-high-inf", mutate("low: 0.1, high: 10", "low: 0.1, high: .inf"),
     ["space.sdkd.lambda.high", "inf is not a finite number"]),
    ("uniform-low-nan", mutate("low: 0.2, high: 0.8", "low: .nan, high: 0.8"),
     ["space.sdkd.phase_boundary.low", "nan is not a finite number"]),
    ("choice-nan", mutate("values: [1, 2, 3]", "values: [1, .nan]"),
     ["space.sdkd.ffb_depth", "values: nan is not a finite number"]),
    ("choice-repeated", mutate("values: [1, 2, 3]", "values: [1, 2, 2]"),
     ["space.sdkd.ffb_depth", "values: 2 is listed twice; list each value once"]),
    ("duplicate-pairs", mutate("resnet32, student: resnet8}", "resnet20, student: resnet8}"),
     ["pairs:", "resnet20->resnet8", "has duplicates; list each teacher/student pair once"]),
    ("duplicate-baselines", mutate("[vanilla, kd, dml, shake]", "[vanilla, kd, kd]"),
     ["baselines:", "has duplicates; list each method once"]),
    ("negative-seed", mutate("seeds: [0, 1]", "seeds: [-1, 1]"),
     ["seeds.0", "greater than or equal to 0"]),
    ("repeated-key", mutate("seeds: [0, 1]", "seeds: [0, 1]\nseeds: [2]"),
     ["line 10", "key 'seeds' is given twice in one mapping", "keep one"]),
    # A pair's own protocol, and the teachers' recipe and checkpoints.
    ("pair-recipe-epochs", mutate(PAIR, PAIR_WITH.format("recipe: {epochs: 4}")),
     ["pairs[0].recipe.epochs: every pair trains recipe.epochs (8)", "drop it"]),
    ("pair-recipe-lr", mutate(PAIR, PAIR_WITH.format("recipe: {lr: -1}")),
     ["pairs[0].recipe:", "lr=-1.0 must be positive"]),
    ("pair-recipe-typo", mutate(PAIR, PAIR_WITH.format("recipe: {lrr: 0.01}")),
     ["unknown key 'pairs.0.recipe.lrr'", "did you mean 'lr'?"]),
    ("pair-recipe-batch", mutate(PAIR, PAIR_WITH.format("recipe: {batch_size: 33}"))
     .replace("num_workers: 1,", "num_workers: 2,"),
     ["pairs[0].recipe.batch_size=33", "resources.num_workers"]),
    ("pair-setting-unused", mutate(PAIR, PAIR_WITH.format("settings: {dkd.beta: 2}")),
     ["pairs[0].settings.dkd.beta: no trial of this space trains dkd", "add dkd to baselines"]),
    ("pair-setting-value", mutate(PAIR, PAIR_WITH.format("settings: {kd.temperature: -1}")),
     ["pairs[0].settings:", "kd.temperature"]),
    ("pair-setting-drawn", mutate(PAIR, PAIR_WITH.format("settings: {sdkd.lambda: 2}")),
     ["pairs[0].settings.sdkd.lambda: the search draws sdkd.lambda too", "keep one"]),
    ("pair-setting-unprefixed", mutate(PAIR, PAIR_WITH.format("settings: {beta: 2}")),
     ["pairs[0].settings.beta: keys are method settings like dkd.beta"]),
    ("pair-setting-typo", mutate(PAIR, PAIR_WITH.format("settings: {kd.temprature: 2}")),
     ["pairs[0].settings:", "did you mean 'kd.temperature'?"]),
    ("teacher-epochs-twice", mutate("teacher: {epochs: 4}",
                                    "teacher: {epochs: 4, recipe: {epochs: 8}}"),
     ["teacher.epochs 4 and teacher.recipe.epochs 8 disagree", "give the epochs once"]),
    ("teacher-recipe-lr", mutate("teacher: {epochs: 4}", "teacher: {recipe: {lr: 0}}"),
     ["teacher.recipe:", "lr=0.0 must be positive"]),
    ("checkpoint-missing", mutate("teacher: {epochs: 4}",
                                  "teacher: {checkpoints: {resnet20: none.pth}}"),
     ["teacher.checkpoints.resnet20:", "none.pth is not a file", "space file's folder"]),
    ("checkpoint-not-a-teacher", mutate("teacher: {epochs: 4}",
                                        "teacher: {checkpoints: {vgg8: none.pth}}"),
     ["teacher.checkpoints.vgg8: no pair has teacher vgg8", "add the pair"]),
    ("checkpoint-garbage", mutate("teacher: {epochs: 4}",
                                  "teacher: {checkpoints: {resnet20: garbage-10MB.yaml}}"),
     ["teacher.checkpoints.resnet20:", "garbage-10MB.yaml"]),
]
BAD += [
    ("tracking-typo", VALID + "tracking: {mlfow: true}\n",
     ["unknown key 'tracking.mlfow'", "did you mean 'mlflow'?"]),
    ("tracking-wandb-mode", VALID + "tracking: {wandb: {mode: cloud}}\n",
     ["tracking.wandb.mode: Input should be 'online' or 'offline' (got 'cloud')"]),
    ("tracking-not-a-section", VALID + "tracking: {mlflow: 3}\n",
     ["tracking.mlflow:", "(got 3)"]),
]
IDS = [case[0] for case in BAD]
assert len(set(IDS)) == len(IDS) >= 25

# One Python process runs the real command on every case: `study.sweep.main(argv)` is what
# `python study/sweep.py` calls. It reports what each call printed, returned and imported.
RUNNER = """
import contextlib, io, json, sys, time
t0 = time.monotonic()
from study.sweep import main
import_s = time.monotonic() - t0
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exit:
            rc = exit.code
    results.append({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(),
                    "seconds": time.monotonic() - start, "ray": "ray" in sys.modules})
print(json.dumps({"import_s": import_s, "results": results}))
"""


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """{case: (space path, output folder, cache folder, outcome)} for every BAD case."""
    from study.runfolder import RunFolder

    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "empty").mkdir()
    held = RunFolder(tmp / "held")  # a run folder holding another sweep
    held.write_space(load_study_file(write(tmp, VALID, "held.yaml")).model_dump(mode="json"))
    argvs, where = [], {}
    for case, content, _ in BAD:
        path = tmp / f"{case}.yaml"
        if content == "<dir>":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content.replace("{tmp}", str(tmp)))
        out = held.root if case == "different-sweep-in-output" else tmp / f"out-{case}"
        cache = tmp / f"cache-{case}"
        argvs.append(["--space", str(path), "--output", str(out), "--cache-dir", str(cache)])
        where[case] = (path, out, cache)
    before = tree(tmp)
    # No GPU is visible to the command, so the GPU case holds on a GPU machine too.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **OWN_RAY}  # a GPU check of this machine
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(argvs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert tree(tmp) == before, "a rejected space wrote something"
    return {case: (*where[case], report["import_s"], outcome)
            for (case, _, _), outcome in zip(BAD, report["results"], strict=True)}


@pytest.mark.parametrize("case, fragments", [(c[0], c[2]) for c in BAD], ids=IDS)
def test_bad_space_is_one_line_naming_file_key_and_fix(bad_runs, case, fragments):
    path, out, cache, import_s, outcome = bad_runs[case]
    assert outcome["rc"] == 2, outcome
    lines = outcome["stderr"].strip().splitlines()
    assert len(lines) == 1 and not outcome["stdout"], outcome
    line = lines[0]
    assert line.startswith(f"sweep.py: error: {path}: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    # Fast because Ray (seconds to import and start) is never reached: checked structurally,
    # not by a clock, which a busy machine would make flaky.
    assert not outcome["ray"], "Ray was imported before the space was found bad"


def test_bad_space_as_a_user_runs_it(tmp_path):
    """The same check through `python study/sweep.py`, timed from the shell's side."""
    path = write(tmp_path, mutate("lr: 0.05", "lr: 0"))
    start = time.monotonic()
    result = run_cli("study/sweep.py", "--space", str(path), "--output", str(tmp_path / "run"))
    seconds = time.monotonic() - start
    assert_usage_error(result, f"{path}: recipe: lr=0")
    assert seconds < 5.0, seconds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
