"""The sweep's searcher across a killed sweep: fixed trials first, then Optuna's draws, and
after a restore neither a repeat nor a gap, whatever the moment of the kill."""

from __future__ import annotations

import itertools
import json

import pytest
from sweeps import tiny_space


def grid_space(tmp_path):
    """2 x 2 grid points. Left to itself, the grid sampler of this seed would hand out a point
    that is still running after the restore."""
    path = tiny_space(tmp_path, samples=4)
    text = path.read_text().replace("num_samples: 4", "sampler: grid\n  seed: 1")
    path.write_text(text.replace("{type: loguniform, low: 0.1, high: 10}",
                                 "{type: choice, values: [0.5, 2]}"))
    return path


def searcher_for(space, url):
    from study.plan import draws_per_method, plan
    from study.search import StudySearcher, make_optuna_searches

    fixed, n_search = plan(space, None)
    budget = draws_per_method(space, n_search)
    s = StudySearcher(space, fixed, make_optuna_searches(space, url, budget), budget)
    s.set_search_properties("test_acc", "max", {})
    return s


@pytest.mark.parametrize("sampler", ["tpe", "grid"])
def test_searcher_resumes_where_it_stopped(tmp_path, sampler):
    """Fixed trials first, then Optuna; a restored searcher neither repeats nor skips. Draws
    handed out after the last save (lost with a killed sweep) come again, in order, under the
    same names, whatever the sampler; Optuna records the lost ones as failed."""
    import optuna
    from ray.tune.search import Searcher

    from study.space import load_space

    path = grid_space(tmp_path) if sampler == "grid" else tiny_space(tmp_path, samples=4)
    space = load_space(path)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = searcher_for(space, url)
    assert searcher.budget == {"sdkd": 4}
    first = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [c["role"] for c in first] == ["fixed", "fixed", "search", "search"]
    searcher.on_trial_complete("t0", {"test_acc": 50.0})  # a baseline: Optuna never hears
    searcher.on_trial_complete("t2", {"test_acc": 40.0})
    searcher.save(str(tmp_path / "state.pkl"))
    straight = [searcher.suggest(f"t{i}") for i in range(4, 7)]  # two draws, then done
    assert straight[2] == Searcher.FINISHED

    restored = searcher_for(space, url)
    restored.restore(str(tmp_path / "state.pkl"))
    again = [restored.suggest(f"u{i}") for i in range(4, 7)]
    assert again == straight  # the same draws, names and order as without the interruption
    drawn = [c["params"] for c in (*first[2:], *again[:2])]
    assert len({json.dumps(p, sort_keys=True) for p in drawn}) == 4

    study = optuna.load_study(study_name="tiny", storage=url)
    states = [(t.state.name, t.params) for t in study.trials]
    assert [s for s, _ in states] == ["COMPLETE", "RUNNING", "FAIL", "FAIL", "RUNNING",
                                      "RUNNING"]
    assert [p for _, p in states[2:4]] == [p for _, p in states[4:]]
    assert study.trials[0].value == 40.0


def test_a_draw_killed_inside_optunas_ask_comes_again_whole(tmp_path):
    """A sweep killed while Optuna was storing a draw's parameters leaves a running trial with
    some of them. On resume that grid point is drawn again, whole, and the grid is covered
    exactly once (a partial draw once crashed the grid sampler on --resume)."""
    import optuna
    from ray.tune.search import Searcher

    from study.space import load_space

    space = load_space(grid_space(tmp_path))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = searcher_for(space, url)
    first = [searcher.suggest(f"t{i}") for i in range(3)]  # two fixed trials, one draw
    searcher.save(str(tmp_path / "state.pkl"))

    study = optuna.load_study(study_name="tiny", storage=url,
                              sampler=searcher.optunas["sdkd"]._ot_study.sampler)
    half = study.ask()  # what `ask` had stored when the kill came: a grid point, one value
    name, values = next(iter(grid_values_of(space).items()))
    half.suggest_categorical(name, values)
    lost_point = dict(zip(study.sampler._param_names,
                          study.sampler._all_grids[study._storage.get_trial_system_attrs(
                              half._trial_id)["grid_id"]], strict=True))

    restored = searcher_for(space, url)
    restored.restore(str(tmp_path / "state.pkl"))
    again = [restored.suggest(f"u{i}") for i in range(4)]
    assert again[3] == Searcher.FINISHED
    drawn = [first[2]["params"], *(c["params"] for c in again[:3])]
    assert {json.dumps(p, sort_keys=True) for p in drawn} == \
        {json.dumps(dict(zip(grid_values_of(space), point, strict=True)), sort_keys=True)
         for point in itertools.product(*grid_values_of(space).values())}
    assert json.dumps(lost_point, sort_keys=True) in {json.dumps(p, sort_keys=True)
                                                       for p in drawn}
    assert study.trials[half.number].state == optuna.trial.TrialState.FAIL


def grid_values_of(space):
    from study.plan import grid_values

    return grid_values(space, "sdkd")


def two_method_space(tmp_path, samples=2):
    from study.space import load_space

    path = tiny_space(tmp_path, samples=samples)
    text = path.read_text().replace(f"  num_samples: {samples}",
                                    f"  methods: [sdkd, kd]\n  num_samples: {samples}")
    path.write_text(text.replace("resources:", "  kd.temperature: {type: choice, values: "
                                              "[2.0, 4.0]}\nresources:"))
    return load_space(path)


def test_tuned_methods_draw_in_turn_from_studies_of_their_own(tmp_path):
    """Equal budgets by construction: each tuned method gets num_samples draws, in turn, from
    its own Optuna study over its own keys; a restore neither repeats nor skips one."""
    import optuna
    from ray.tune.search import Searcher

    space = two_method_space(tmp_path)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = searcher_for(space, url)
    assert searcher.budget == {"sdkd": 2, "kd": 2}
    got = [searcher.suggest(f"t{i}") for i in range(4)]  # two fixed trials, then the draws
    searcher.save(str(tmp_path / "state.pkl"))
    rest = [searcher.suggest(f"t{i}") for i in range(4, 7)]
    assert rest[2] == Searcher.FINISHED
    drawn = [c for c in got + rest[:2] if c["role"] == "search"]
    assert [c["trial_name"] for c in drawn] == ["sdkd-search-0001", "kd-search-0001",
                                                "sdkd-search-0002", "kd-search-0002"]
    for c in drawn:
        assert {k.split(".")[0] for k in c["params"]} == {c["method"]}, c
    restored = searcher_for(space, url)
    restored.restore(str(tmp_path / "state.pkl"))
    assert [restored.suggest(f"u{i}") for i in range(4, 7)] == rest
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names == ["tiny-kd", "tiny-sdkd"]
    searcher.on_trial_complete("t3", {"test_acc": 42.0})  # kd's first draw: its study only
    kd = optuna.load_study(study_name="tiny-kd", storage=url)
    assert [t.value for t in kd.trials if t.state.name == "COMPLETE"] == [42.0]
    sdkd = optuna.load_study(study_name="tiny-sdkd", storage=url)
    assert not [t for t in sdkd.trials if t.state.name == "COMPLETE"]


def test_max_trials_shares_the_draws_evenly(tmp_path):
    from study.plan import draws_per_method

    space = two_method_space(tmp_path, samples=3)
    assert draws_per_method(space, 6) == {"sdkd": 3, "kd": 3}
    assert draws_per_method(space, 3) == {"sdkd": 2, "kd": 1}
