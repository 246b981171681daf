"""The space schema: a valid file loads; each kind of mistake is one line naming file and key."""

import textwrap

import pytest

from sdkd_core.errors import UserError
from study.space import load_space

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
    space = load_space(write(tmp_path, VALID))
    assert space.name == "fmnist-ablations" and len(space.pairs) == 2
    assert space.recipe_obj().epochs == 8 and space.recipe_obj().schedule == "cosine"
    assert space.space["sdkd.lambda"].low == 0.1
    assert space.resources.use_gpu is False and space.search.metric == "test_acc"


def mutate(old, new):
    assert old in VALID, old
    return VALID.replace(old, new)


BAD = [
    ("syntax", "name: [unclosed", "YAML syntax error at line"),
    ("scalar", "just a string", "the file is a str"),
    ("list-for-mapping", mutate("recipe: {epochs: 8, lr: 0.05, batch_size: 64}", "recipe: [8]"),
     "recipe: Input should be a valid dictionary"),
    ("unknown-key", mutate("seeds: [0, 1]", "seeds: [0, 1]\nsede: 3"),
     "unknown key 'sede'; did you mean 'seeds'?"),
    ("unknown-nested-key", mutate("num_samples: 6", "num_sample: 6"),
     "unknown key 'search.num_sample'; did you mean 'num_samples'?"),
    ("wrong-type", mutate("num_samples: 6", "num_samples: many"), "search.num_samples"),
    ("epochs", mutate("epochs: 8,", "epochs: 0,"), "recipe: epochs=0 must be at least 1"),
    ("lr", mutate("lr: 0.05", "lr: -1"), "recipe: lr=-1"),
    ("low-high", mutate("low: 0.2, high: 0.8", "low: 0.8, high: 0.2"),
     "space.sdkd.phase_boundary: low=0.8 must be below high=0.2"),
    ("loguniform", mutate("low: 0.1, high: 10", "low: 0, high: 10"), "loguniform needs low > 0"),
    ("empty-choice", mutate("values: [1, 2, 3]", "values: []"), "space.sdkd.ffb_depth.values"),
    ("bad-dist-type", mutate("type: uniform", "type: normal"), "'type' must be one of"),
    ("model", mutate("resnet20, student: resnet8}", "resnet20, student: resnet9}"),
     "pairs[0].student: unknown model 'resnet9'"),
    ("method", mutate("[vanilla, kd, dml, shake]", "[vanilla, kdd]"), "unknown method 'kdd'"),
    ("dataset", mutate("name: fashion_mnist", "name: mnist"), "unknown dataset 'mnist'"),
    ("sampler", mutate("sampler: tpe", "sampler: bayes"), "search.sampler"),
    ("scheduler", mutate("scheduler: asha", "scheduler: hyperband"), "search.scheduler"),
    ("grid-continuous", mutate("sampler: tpe", "sampler: grid"),
     "a grid needs finite values"),
    ("phase-boundary", mutate("low: 0.2, high: 0.8", "low: 0.2, high: 1.5"),
     "sdkd.phase_boundary=1.5"),
    ("ffb-depth", mutate("values: [1, 2, 3]", "values: [0, 1]"), "sdkd.ffb_depth=0"),
    ("fuse-stage", mutate("low: 1, high: 2}", "low: 1, high: 5}"),
     "space.sdkd.fuse_stage: 5 is not a stage resnet8 can fuse at; use 0..2"),
    ("num-samples", mutate("num_samples: 6", "num_samples: 0"), "search.num_samples"),
    ("gpu", mutate("num_workers: 1,", "num_workers: 1, use_gpu: true,"), "no CUDA GPU"),
    ("duplicate-seeds", mutate("seeds: [0, 1]", "seeds: [0, 0]"), "has duplicates"),
    ("unprefixed-key", mutate("sdkd.lambda:", "lambda:"), "keys are method settings"),
    ("missing-pairs", "name: x\n", "'pairs' is required"),
]


@pytest.mark.parametrize("case, text, fragment", BAD, ids=[c[0] for c in BAD])
def test_bad_space_is_one_line_naming_file_and_key(tmp_path, case, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_space(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert fragment in message, message


def test_files_that_are_not_space_files(tmp_path):
    cases = {
        "missing": (tmp_path / "nope.yaml", "no such file"),
        "directory": (tmp_path, "is a directory"),
    }
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\x00")
    cases["not-utf8"] = (binary, "not UTF-8")
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"x" * (10 << 20))
    cases["10MB"] = (garbage, "is not a space file")
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 13)]
    bomb.write_text("\n".join(lines) + "\n")
    cases["alias-bomb"] = (bomb, "YAML aliases")
    for name, (path, fragment) in cases.items():
        with pytest.raises(UserError) as err:
            load_space(path)
        assert fragment in str(err.value), (name, str(err.value))
