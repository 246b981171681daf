"""Several tuned methods in one sweep, each with the same budget: the space names them
(`search.methods`) with each its own distributions; what cannot be equal is refused in one
line; --dry-run shows each method's draws and cost."""

from __future__ import annotations

import pytest
from conftest import assert_usage_error, run_cli

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
    from study.plan import draws_per_method, plan, search_trial_count
    from study.search import study_name
    from study.space import load_space

    space = load_space(write(tmp_path))
    assert space.tuned_methods == ["sdkd", "shake"] and space.search.method == "sdkd"
    assert search_trial_count(space) == 4
    assert draws_per_method(space, plan(space, None)[1]) == {"sdkd": 2, "shake": 2}
    assert [study_name(space, m) for m in space.tuned_methods] == ["fair-sdkd", "fair-shake"]
    assert space.trained_methods() == ["vanilla", "sdkd", "shake"]


BAD = [
    ("methods: [sdkd, shak]", KEYS, "search.methods: unknown method 'shak'"),
    ("methods: [sdkd, shake, sdkd]", KEYS,
     "search.methods: ['sdkd', 'shake', 'sdkd'] has duplicates"),
    ("method: kd, methods: [sdkd, shake]", KEYS, "search: method kd and methods ['sdkd', "
                                                  "'shake'] disagree; give search.methods alone"),
    ("methods: [sdkd]", KEYS, "space.shake.beta: the search tunes sdkd only; use their keys, or "
                              "add shake to search.methods"),
    ("methods: [sdkd, shake, kd]", KEYS, "search.methods: kd has no space.kd.* distributions"),
    ("methods: [sdkd, shake], sampler: grid",
     KEYS + "  sdkd.ffb_depth: {type: choice, values: [1, 2]}\n",
     "search.sampler: grid sizes differ (sdkd 4, shake 2 points)"),
]


@pytest.mark.parametrize("search, space, fragment", BAD, ids=[b[2][:30] for b in BAD])
def test_what_cannot_be_tuned_equally_is_one_line(tmp_path, search, space, fragment):
    result = run_cli("study/sweep.py", "--space", str(write(tmp_path, search, space)),
                     "--dry-run")
    assert_usage_error(result, fragment)


def test_dry_run_shows_each_tuned_methods_draws_and_cost(tmp_path):
    result = run_cli("study/sweep.py", "--space", str(write(tmp_path)), "--dry-run",
                     "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "drawn trials: 4 (grid; scheduler asha; each tuned method the same budget)" in out
    assert "  sdkd     2 drawn over sdkd.lambda (+1 confirming), up to " in out, out
    assert "  shake    2 drawn over shake.beta (+1 confirming), up to " in out, out
    assert "total trials: 8" in out  # 2 vanilla, 2 x 2 drawn, 2 x 1 confirming
