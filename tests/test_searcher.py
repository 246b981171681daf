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
    from study.plan import plan
    from study.search import StudySearcher, make_optuna_search

    fixed, n_search = plan(space, None)
    s = StudySearcher(space, fixed, make_optuna_search(space, url), n_search)
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
    assert searcher.n_search == 4
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
                              sampler=searcher.optuna._ot_study.sampler)
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

    return grid_values(space)
