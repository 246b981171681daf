"""The sweep's searcher across a killed sweep: baselines first, then Optuna's draws, and after a
restore neither a repeat nor a gap, whatever the moment of the kill. optuna.db is the record:
each draw is named there, and each outcome told once."""

from __future__ import annotations

import itertools
import json

import optuna
import pytest
from ray.tune.search import Searcher
from sweeps import tiny_space

from study.load import load_study_file
from study.plan import grid_values
from study.runfolder import RunFolder
from study.search import NAME_ATTR, StudySearcher, make_sampler, study_name
from study.study_object import make_study


def grid_space(tmp_path):
    """2 x 2 grid points."""
    path = tiny_space(tmp_path, samples=4)
    text = path.read_text().replace("num_samples: 4", "sampler: grid\n  seed: 1")
    path.write_text(text.replace("{type: loguniform, low: 0.1, high: 10}",
                                 "{type: choice, values: [0.5, 2]}"))
    return path


def study_of(tmp_path, path):
    return make_study(load_study_file(path), RunFolder(tmp_path / "run"), tmp_path / "cache")


def searcher_for(study):
    s = StudySearcher(study)
    s.set_search_properties(study.metric, study.mode, {})
    return s


def optuna_trials(study, method="sdkd"):
    return optuna.load_study(study_name=study_name(study, method),
                             storage=study.folder.optuna_url).trials


@pytest.mark.parametrize("sampler", ["tpe", "grid"])
def test_searcher_resumes_where_it_stopped(tmp_path, sampler):
    """Baselines first, then Optuna; a restored searcher neither repeats nor skips. Draws
    handed out after the last save (lost with a killed sweep) come again, in order, under the
    same names and with the same parameters, from the same Optuna trials."""
    path = grid_space(tmp_path) if sampler == "grid" else tiny_space(tmp_path, samples=4)
    study = study_of(tmp_path, path)
    study.folder.root.mkdir()
    searcher = searcher_for(study)
    first = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [c["role"] for c in first] == ["baseline", "baseline", "drawn", "drawn"]
    searcher.on_trial_complete("t0", {"test_acc": 50.0})  # a baseline: Optuna never hears
    searcher.on_trial_complete("t2", {"test_acc": 40.0})
    searcher.save(str(tmp_path / "state.pkl"))
    straight = [searcher.suggest(f"t{i}") for i in range(4, 7)]  # two draws, then done
    assert straight[2] == Searcher.FINISHED

    restored = searcher_for(study)
    restored.restore(str(tmp_path / "state.pkl"))
    again = [restored.suggest(f"u{i}") for i in range(4, 7)]
    assert again == straight  # the same draws, names and order as without the interruption
    drawn = [c["params"] for c in (*first[2:], *again[:2])]
    assert len({json.dumps(p, sort_keys=True) for p in drawn}) == 4

    trials = optuna_trials(study)
    assert [t.state.name for t in trials] == ["COMPLETE", "RUNNING", "RUNNING", "RUNNING"]
    assert [t.user_attrs[NAME_ATTR] for t in trials] == [f"sdkd-drawn-000{i}" for i in range(1, 5)]
    assert trials[0].value == 40.0
    restored.on_trial_complete("u2", {"test_acc": 30.0})  # a restarted trial: the first stands
    assert optuna_trials(study)[0].value == 40.0


def test_a_draw_killed_inside_optunas_ask_is_drawn_again_whole(tmp_path):
    """A sweep killed while Optuna was storing a draw's parameters leaves a running trial with
    some of them and no name. On resume it is failed, the same grid point is drawn again whole
    under the same name, and the grid is covered exactly once."""
    study = study_of(tmp_path, grid_space(tmp_path))
    study.folder.root.mkdir()
    searcher = searcher_for(study)
    first = [searcher.suggest(f"t{i}") for i in range(3)]  # two baselines, one draw
    searcher.save(str(tmp_path / "state.pkl"))
    straight = searcher_for(study)
    straight.restore(str(tmp_path / "state.pkl"))

    ot = optuna.load_study(study_name=study_name(study, "sdkd"), storage=study.folder.optuna_url)
    ot.sampler = make_sampler(study, "sdkd", 2)
    half = ot.ask()  # what `ask` had stored when the kill came: one value, no name
    key, values = next(iter(grid_values(study.file, "sdkd").items()))
    half.suggest_categorical(key, values)

    restored = searcher_for(study)
    restored.restore(str(tmp_path / "state.pkl"))
    again = [restored.suggest(f"u{i}") for i in range(4)]
    assert again[3] == Searcher.FINISHED
    assert [c["trial_name"] for c in again[:3]] == ["sdkd-drawn-0002", "sdkd-drawn-0003",
                                                    "sdkd-drawn-0004"]
    drawn = [first[2]["params"], *(c["params"] for c in again[:3])]
    grid = grid_values(study.file, "sdkd")
    assert {json.dumps(p, sort_keys=True) for p in drawn} == \
        {json.dumps(dict(zip(grid, point, strict=True)), sort_keys=True)
         for point in itertools.product(*grid.values())}
    assert optuna_trials(study)[half.number].state == optuna.trial.TrialState.FAIL


def two_method_space(tmp_path, samples=2):
    path = tiny_space(tmp_path, samples=samples)
    text = path.read_text().replace(f"  num_samples: {samples}",
                                    f"  methods: [sdkd, kd]\n  num_samples: {samples}")
    path.write_text(text.replace("resources:", "  kd.temperature: {type: choice, values: "
                                              "[2.0, 4.0]}\nresources:"))
    return study_of(tmp_path, path)


def test_tuned_methods_draw_in_turn_from_studies_of_their_own(tmp_path):
    """Equal budgets by construction: each tuned method gets num_samples draws, in turn, from
    its own Optuna study over its own keys; a restore neither repeats nor skips one."""
    study = two_method_space(tmp_path)
    study.folder.root.mkdir()
    assert study.draws == {"sdkd": 2, "kd": 2}
    searcher = searcher_for(study)
    got = [searcher.suggest(f"t{i}") for i in range(4)]  # two baselines, then the draws
    searcher.save(str(tmp_path / "state.pkl"))
    rest = [searcher.suggest(f"t{i}") for i in range(4, 7)]
    assert rest[2] == Searcher.FINISHED
    drawn = [c for c in got + rest[:2] if c["role"] == "drawn"]
    assert [c["trial_name"] for c in drawn] == ["sdkd-drawn-0001", "kd-drawn-0001",
                                                "sdkd-drawn-0002", "kd-drawn-0002"]
    for c in drawn:
        assert {k.split(".")[0] for k in c["params"]} == {c["method"]}, c
    restored = searcher_for(study)
    restored.restore(str(tmp_path / "state.pkl"))
    assert [restored.suggest(f"u{i}") for i in range(4, 7)] == rest
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(study.folder.optuna_url))
    assert names == ["tiny-kd", "tiny-sdkd"]
    searcher.on_trial_complete("t3", {"test_acc": 42.0})  # kd's first draw: its study only
    assert [t.value for t in optuna_trials(study, "kd") if t.state.name == "COMPLETE"] == [42.0]
    assert not [t for t in optuna_trials(study, "sdkd") if t.state.name == "COMPLETE"]


def test_the_run_folders_record_of_an_end_is_what_optuna_is_told(tmp_path):
    """A trial that Tune runs again after its end returns at once, and Tune passes on an
    older result: the study is told the outcome the run folder recorded."""
    study = study_of(tmp_path, tiny_space(tmp_path, samples=1))
    study.folder.root.mkdir()
    searcher = searcher_for(study)
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    study.folder.record_end(configs[2]["trial_name"], "completed", {"epoch": 3, "test_acc": 61.0})
    searcher.on_trial_complete("t2", {"epoch": 2, "test_acc": 55.0})
    assert optuna_trials(study)[0].value == 61.0


def test_max_trials_shares_the_draws_evenly(tmp_path):
    from study.plan import draws_per_method

    study = two_method_space(tmp_path, samples=3)
    assert draws_per_method(study.file, 6) == {"sdkd": 3, "kd": 3}
    assert draws_per_method(study.file, 3) == {"sdkd": 2, "kd": 1}
