"""The report's claims section: each claim a method declares, tested on a run, with a verdict
only where both sides have two seeds or more, and the numbers behind it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

VERDICTS = {"supported", "not supported", "not tested here"}


def test_attention_verdicts_follow_their_rules_on_fixed_similarities():
    from analysis.claims import MARGIN, NOT_SUPPORTED, SUPPORTED, paired_line

    rng = np.random.default_rng(0)
    a = {0: rng.uniform(0.5, 0.9, 40), 1: rng.uniform(0.5, 0.9, 40)}
    b = {s: v - 0.1 + rng.normal(0, 0.02, 40) for s, v in a.items()}
    b[1][3] = np.nan  # an image whose map has no r: dropped from both sides
    verdict, text = paired_line(a, b, "A", "B", at_least=False)
    diffs = np.concatenate([a[0] - b[0], np.delete(a[1] - b[1], 3)])
    ci = stats.ttest_1samp(diffs, 0).confidence_interval(0.95)
    assert verdict == SUPPORTED
    assert f"difference {diffs.mean():+.3f} (95% CI {ci.low:+.3f} to {ci.high:+.3f}" in text
    assert "79 image maps with a defined r, on 2 seeds" in text
    # "More closely" needs every seed's mean difference above zero, not only the pooled one.
    mixed = {0: a[0] + 0.05, 1: a[1] - 0.3}  # pooled mean +0.125, but seed 0 is below
    assert paired_line(a, mixed, "A", "B", at_least=False)[0] == NOT_SUPPORTED
    # "At least as closely": a shortfall smaller than the margin is still supported ...
    near = {s: v + MARGIN / 5 + rng.normal(0, 0.005, 40) for s, v in a.items()}
    assert paired_line(a, near, "A", "B", at_least=True)[0] == SUPPORTED
    assert paired_line(a, near, "A", "B", at_least=False)[0] == NOT_SUPPORTED
    # ... a larger one is not.
    far = {s: v + 3 * MARGIN for s, v in a.items()}
    assert paired_line(a, far, "A", "B", at_least=True)[0] == NOT_SUPPORTED


def test_overall_verdict_needs_every_comparison():
    from analysis.claims import NOT_SUPPORTED, SUPPORTED, UNTESTED, overall

    assert overall([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert overall([SUPPORTED, UNTESTED]) == UNTESTED
    assert overall([SUPPORTED, NOT_SUPPORTED, UNTESTED]) == NOT_SUPPORTED
    assert overall([]) == UNTESTED


@pytest.mark.slow
def test_the_tiny_runs_claims_have_verdicts_or_say_why_not(tiny_run):
    claims = pd.read_csv(tiny_run.run / "report" / "claims.csv")
    assert len(claims) == 4 and set(claims["verdict"]) <= VERDICTS
    beats, attends, proxy, shape = claims.to_dict("records")
    # SDKD is the only tuned method: nothing to beat with the same budget.
    assert beats["verdict"] == "not tested here"
    assert "tuned no method besides SDKD" in beats["numbers"]
    # DML did not run; SHAKE did (at its defaults), on both seeds: that half has numbers.
    assert attends["verdict"] in ("not tested here", "not supported")
    assert "SDKD and DML students on 0 common seed(s); a verdict needs 2" in attends["numbers"]
    assert "vs SHAKE student (more closely): r with the teacher: SDKD student" in \
        attends["numbers"] and "on 2 seeds" in attends["numbers"]
    # The proxy and the student of the chosen SDKD configuration, on both seeds.
    assert proxy["verdict"] in ("supported", "not supported")
    assert "SDKD proxy teacher" in proxy["numbers"] and "on 2 seeds" in proxy["numbers"]
    assert shape["verdict"] == "not tested here"
    assert "does not train both sdkd.proxy_arch=student and =teacher" in shape["numbers"]
    page = (tiny_run.run / "report" / "index.html").read_text()
    assert page.index("id='protocol'") < page.index("id='claims'") < page.index("id='tables'")
    assert "no validation split" in page and "SDKD 3 drawn trials" in page
    # The protocol as the sweep ran it: the first rung moved past SDKD's default boundary.
    assert "ASHA (first rung at epoch 3, reduction 2.0), maximising test_acc" in page


@pytest.mark.slow
def test_a_run_with_one_seed_gives_no_verdict(tiny_run, tmp_path):
    import json
    import shutil

    from analysis.claims import evaluate_claims
    from analysis.run import load_run

    one = tmp_path / "one-seed"
    shutil.copytree(tiny_run.run, one, ignore=shutil.ignore_patterns("report", "tune"))
    results = pd.read_csv(one / "results.csv")
    results[results["seed"] == 0].to_csv(one / "results.csv", index=False)
    record = json.loads((one / "study.json").read_text())
    record["space"]["seeds"] = record["seeds"] = [0]
    (one / "study.json").write_text(json.dumps(record))
    verdicts = evaluate_claims(load_run(one), n_images=8, log=lambda _: None)
    assert [v.verdict for v in verdicts] == ["not tested here"] * 4
    assert "on 1 seed(s); a verdict needs 2" in verdicts[2].numbers[0]
