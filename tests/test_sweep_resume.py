"""Real sweeps interrupted (SIGINT, SIGKILL) and resumed. (Joining a running cluster: every
sweep of the suite joins the session's Ray head, tests/conftest.py.)"""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
from conftest import SWEEP_TEACHERS, start_cli
from sweeps import (
    check_run_folder,
    result_lines,
    sweep,
    sweep_killed_when,
    tiny_space,
    wait_for,
)

EPOCHS = 4
DRAWN, CONFIRM = "sdkd-drawn-0001", "sdkd-drawn-0001-s1"


@pytest.fixture(scope="module")
def interrupted_twice(tmp_path_factory):
    """One sweep (vanilla on two seeds, one SDKD draw, its confirming run) interrupted twice:
    SIGINT during the second baseline, then, resumed, SIGKILLed during the confirming trial,
    then resumed to the end."""
    tmp = tmp_path_factory.mktemp("interrupted")
    path = tiny_space(tmp, name="interrupted", epochs=EPOCHS, baselines="[vanilla]",
                      samples=1, resources="{max_concurrent: 1}")
    path.write_text(path.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    run, cache = tmp / "run", SWEEP_TEACHERS
    proc = start_cli("study/sweep.py", "--space", str(path), "--output", str(run),
                     "--cache-dir", str(cache))
    try:
        wait_for(lambda: len(result_lines(run, "vanilla-resnet14-resnet8-s1")) >= 1,
                 300, "the second trial's first epoch", proc, every=0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    report_after_sigint = (run / "report" / "index.html").is_file()

    confirming = lambda: result_lines(run, CONFIRM, "confirm")  # noqa: E731
    sweep_killed_when(lambda: len(confirming()) >= 1, "the confirming trial's first epoch",
                      None, run, cache)
    before_drawn, before = result_lines(run, DRAWN), confirming()
    final = sweep("--resume", "--output", str(run), "--no-report", cache=cache)
    return SimpleNamespace(run=run, sigint=(proc.returncode, out, err), final=final,
                           report_after_sigint=report_after_sigint,
                           before_drawn=before_drawn, before=before, after=confirming())


@pytest.mark.slow
def test_sigint_ends_with_the_resume_command_and_exit_130_then_resume_completes(
        interrupted_twice):
    run = interrupted_twice.run
    code, out, err = interrupted_twice.sigint
    assert code == 130, err[-3000:]
    line = f"resume with: python study/sweep.py --resume --output {run}"
    (last,) = [x for x in err.splitlines() if x.startswith("interrupted by SIGINT")]
    assert line in last and "of 3 trials finished" in last, last
    assert "Tuner.restore" not in out + err and "done in" not in out
    assert interrupted_twice.report_after_sigint
    final = interrupted_twice.final
    assert final.returncode == 0, final.stderr[-3000:]
    assert "done in" in final.stdout
    check_run_folder(run, epochs=EPOCHS, expected_trials=3 + 1)  # 2 fixed, 1 drawn, 1 confirming


@pytest.mark.slow
def test_sigkill_while_confirming_then_resume_continues_the_confirming_trial(interrupted_twice):
    t = interrupted_twice
    assert len(t.before_drawn) == EPOCHS and 1 <= len(t.before) < EPOCHS
    assert t.final.returncode == 0, t.final.stderr[-3000:]
    assert result_lines(t.run, DRAWN) == t.before_drawn  # the search is not run again
    assert t.after[:len(t.before)] == t.before and t.after[len(t.before)]["epoch"] > 1
    results = check_run_folder(t.run, epochs=EPOCHS, expected_trials=4)
    assert [(r["trial_id"], r["seed"]) for r in results if r["method"] == "sdkd"] == \
        [(DRAWN, "0"), (CONFIRM, "1")]
