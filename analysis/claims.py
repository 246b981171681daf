"""The claims of the run's method (`Distiller.claims`), each tested on the run: supported, not
supported, or not tested here, with the numbers behind the verdict.

Every method stands as the tables choose it (analysis/selection.py): a tuned method by its
configuration with the best mean validation accuracy, an untuned one at its defaults. A verdict
needs at least two seeds on each side of a comparison; with fewer the claim is "not tested
here" and the numbers say what ran. Rules, also written beside each verdict:

- accuracy (`BeatsTunedBaselines`, `SettingBeats`): Welch's t-test over seeds of the last-epoch
  test score of the task's metric (accuracy, mIoU, RMSE); supported where every difference is
  better (larger; smaller for an RMSE) with p < 0.05 after Holm's correction (the comparison
  table's correction for tuned baselines);
- attention (`AttendsLikeTeacher`, `HeadCloserToTeacher`): per test image, the Pearson r of a
  network's Grad-CAM++ map with the teacher's; the paired difference of two networks over
  every image of every seed, with its 95% confidence interval. "More closely": the interval
  lies above 0 and every seed's mean difference is positive. "At least as closely": the
  interval's lower end lies above -MARGIN (non-inferiority);
- budget: an accuracy comparison with a side still improving at its last epoch
  (analysis/convergence.py) gets no verdict ("not tested here"), whatever its p-value: the
  budget, not the method, decided that cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.convergence import CellTrend, cell_trend
from analysis.run import Run, Skipped, method_class, method_label, pair_label
from analysis.selection import chosen_trials, method_params, on_pair, tuned_config, tuned_trials
from analysis.significance import holm, welch
from analysis.tables import comparison, method_columns
from sdkd_core.claims import (
    AttendsLikeTeacher,
    BeatsTunedBaselines,
    HeadCloserToTeacher,
    SettingBeats,
)
from sdkd_core.stats import summarize
from sdkd_core.tasks import TASKS
from study.runfolder.trials import CONFIRMING, DRAWN

SUPPORTED, NOT_SUPPORTED, UNTESTED = "supported", "not supported", "not tested here"
ALPHA = 0.05
MARGIN = 0.05  # Pearson r: "at least as closely" allows a shortfall smaller than this
ACCURACY_RULE = ("Welch's t-test over seeds on last-epoch test accuracy; supported where every "
                 "difference is positive with p < 0.05 after Holm's correction")
ATTENTION_RULE = ("paired per-image difference of Pearson r with the teacher's Grad-CAM++ map "
                  "over every image of every seed, 95% CI; 'more closely': CI above 0 and every "
                  f"seed's mean difference positive; 'at least as closely': CI above -{MARGIN}")


def score_rule(run: Run) -> str:
    """ACCURACY_RULE in the run's task's words."""
    task = run.task
    if task.metric == TASKS["classification"].metric:
        return ACCURACY_RULE
    way = "smaller" if task.sign() < 0 else "larger"
    return (f"Welch's t-test over seeds on last-epoch test {task.metric_name}; supported where "
            f"every difference is better ({way}) with p < 0.05 after Holm's correction")


def _points(run: Run, diff: float) -> str:
    """A difference as the claims print it: '+1.20 points' of a percentage, '-0.031' else."""
    task = run.task
    return f"{diff:+.2f} points" if task.metric in task.percent else f"{diff:+.3f}"


@dataclass
class Verdict:
    claim: str
    verdict: str
    numbers: list[str]
    rule: str

    def row(self) -> dict:
        return {"claim": self.claim, "verdict": self.verdict,
                "numbers": " | ".join(self.numbers), "rule": self.rule}


def overall(verdicts: list[str]) -> str:
    """One claim over its comparisons: any failure refutes it; it holds only if all held."""
    if NOT_SUPPORTED in verdicts:
        return NOT_SUPPORTED
    return SUPPORTED if verdicts and all(v == SUPPORTED for v in verdicts) else UNTESTED


def _acc(values: pd.Series) -> str:
    return f"{summarize(values.tolist())} (n={len(values)})"


def beats_tuned(run: Run, claim: BeatsTunedBaselines) -> Verdict:
    others = [m for m in run.tuned_methods if m != run.method]
    if not others:
        return Verdict(claim.text, UNTESTED, [
            f"the run tuned no method besides {run.label}: list baselines in search.methods "
            "to tune them with the same budget"], score_rule(run))
    long, tests = comparison(run)
    mine, score = method_columns(run.method)[1], run.score
    numbers, verdicts = [], []
    for t, s in run.pairs():
        a = tuned_trials(run, run.method, t, s)[score]
        for other in others:
            theirs, b = method_columns(other)[1], tuned_trials(run, other, t, s)[score]
            line = f"{pair_label(t, s)}: {mine} {_acc(a)} vs {theirs} {_acc(b)}"
            found = tests[(tests["teacher"] == t) & (tests["student"] == s)
                          & tests["column"].isin([mine, theirs])
                          & tests["versus"].isin([mine, theirs])] if not tests.empty else tests
            if min(len(a), len(b)) < 2 or found.empty:
                verdicts.append(UNTESTED)
                numbers.append(f"{line}: fewer than 2 seeds, no verdict")
                continue
            budget = budget_decided(long, t, s, {mine: run.label, theirs: method_label(other)},
                                    run)
            if budget:
                verdicts.append(UNTESTED)
                numbers.append(f"{line}: {budget}")
                continue
            c = found.iloc[0]
            side = 1 if c["column"] == mine else -1  # the test's difference, mine minus theirs
            diff, low, high = side * c["diff"], *sorted((side * c["ci_low"], side * c["ci_high"]))
            better = run.task.sign() * diff > 0  # a smaller RMSE is better
            verdicts.append(SUPPORTED if better and c["p_holm"] < ALPHA else NOT_SUPPORTED)
            d = run.task.digits()
            numbers.append(f"{line}: {_points(run, diff)} (95% CI, unadjusted: {low:+.{d}f} "
                           f"to {high:+.{d}f}), p_Holm {c['p_holm']:.3g}")
    return Verdict(claim.text, overall(verdicts), numbers, score_rule(run))


def budget_decided(long: pd.DataFrame, teacher: str, student: str,
                   names: dict[str, str], run: Run | None = None) -> str:
    """'not tested here: ...' when a cell of `names` (column -> display name) on the pair was
    still improving at its last epoch (analysis/convergence.py), else ''."""
    rows = long[(long["teacher"] == teacher) & (long["student"] == student)
                & long["column"].isin(list(names)) & long["still_improving"]]
    task = run.task if run is not None else TASKS["classification"]
    reasons = [CellTrend.describe_row(names[r["column"]], r, task) for _, r in rows.iterrows()]
    return f"{UNTESTED}: {'; '.join(reasons)}" if reasons else ""


def setting_beats(run: Run, claim: SettingBeats) -> Verdict:
    task, score = run.task, run.score
    rule = score_rule(run).replace("Holm's correction", "Holm's correction over the pairs") + \
        f" (each value's configuration chosen by validation {task.metric_name})"
    found, numbers = [], []
    for t, s in run.pairs():
        done = on_pair(run, t, s)
        rows = done[(done["method"] == run.method) & done["role"].isin([DRAWN, CONFIRMING])]
        if claim.key not in rows.columns or not {str(claim.better), str(claim.worse)} <= set(
                rows[claim.key].astype(str)):
            numbers.append(f"{pair_label(t, s)}: the run does not train both {claim.key}="
                           f"{claim.better} and ={claim.worse}; draw {claim.key} in the space "
                           "to test this")
            continue
        params = method_params(run, run.method, rows)  # the key is constant within a value
        a_rows, b_rows = (tuned_config(rows[rows[claim.key].astype(str) == str(v)], score,
                                       params, task) for v in (claim.better, claim.worse))
        a, b = a_rows[score], b_rows[score]
        line = (f"{pair_label(t, s)}: {claim.key}={claim.better} {_acc(a)} vs "
                f"{claim.worse} {_acc(b)}")
        trends = {v: cell_trend(run.epochs, r["trial_id"].tolist(), r[score].tolist(), task)
                  for v, r in ((claim.better, a_rows), (claim.worse, b_rows))}
        late = [t.describe(f"{claim.key}={v}") for v, t in trends.items() if t.improving]
        if late:
            numbers.append(f"{line}: {UNTESTED}: {'; '.join(late)}")
            found.append((line, None))
            continue
        test = welch(a.tolist(), b.tolist())
        if test is None:
            numbers.append(f"{line}: fewer than 2 seeds on a side, no verdict (run the chosen "
                           "configurations on more seeds)")
        found.append((line, test))
    tested = [(line, test) for line, test in found if test is not None]
    verdicts = [UNTESTED] * (len(found) - len(tested))
    for (line, (diff, low, high, _p)), p_holm in zip(
            tested, holm([t[3] for _, t in tested]), strict=True):
        verdicts.append(SUPPORTED if task.sign() * diff > 0 and p_holm < ALPHA
                        else NOT_SUPPORTED)
        d = task.digits()
        numbers.append(f"{line}: {_points(run, diff)} (95% CI, unadjusted: {low:+.{d}f} "
                       f"to {high:+.{d}f}), p_Holm {p_holm:.3g}")
    return Verdict(claim.text, overall(verdicts), numbers, rule)


class Attention:
    """Pearson r of networks' Grad-CAM++ maps with the teacher's, per test image; each network
    built and explained once."""

    def __init__(self, run: Run, n_images: int):
        # analysis.gradcam imports torch, grad-cam, cv2 and matplotlib (5 s and more), the
        # report's modules take under 1 s: only once a claim needs maps, so a wrong folder is
        # refused at once.
        from analysis import gradcam

        self.gradcam = gradcam
        self.run = run
        _, self.images, self.labels = gradcam.test_images(run, n_images)
        self.n_images = len(self.images)
        self._teachers: dict[str, object] = {}
        self._methods: dict[str, object] = {}
        self._maps: dict[tuple, np.ndarray] = {}

    def _map(self, key: tuple, network) -> np.ndarray:
        if key not in self._maps:
            self._maps[key] = self.gradcam.cam_maps(network(), self.images, self.labels,
                                                    task=self.run.task)
        return self._maps[key]

    def teacher(self, arch: str):
        if arch not in self._teachers:
            self._teachers[arch] = self.run.teacher_network(arch)
        return self._teachers[arch]

    def with_teacher(self, arch: str, trial_id: str, head: str | None = None) -> np.ndarray:
        def build():  # the checkpoint is read once, for the student and its heads alike
            if trial_id not in self._methods:
                self._methods[trial_id] = self.run.trial_method(trial_id, self.teacher(arch))
            method = self._methods[trial_id]
            return method.extra_network(head) if head else method.student

        ours = self._map(("teacher", arch), lambda: self.teacher(arch))
        return self.gradcam.map_similarity(ours, self._map((trial_id, head), build))[0]


def paired_line(a: dict[int, np.ndarray], b: dict[int, np.ndarray], name_a: str,
                name_b: str, at_least: bool) -> tuple[str, str]:
    """(verdict, numbers) for per-image similarities a and b on the same seeds' images."""
    from scipy import stats  # a second to import: only when a claim compares maps

    seeds = sorted(a)
    # Images where either map is constant have no r: left out of both sides alike.
    kept = {s: np.isfinite(a[s]) & np.isfinite(b[s]) for s in seeds}
    diffs = {s: a[s][kept[s]] - b[s][kept[s]] for s in seeds}
    flat = np.concatenate(list(diffs.values()))
    sim_a = np.concatenate([a[s][kept[s]] for s in seeds])
    sim_b = np.concatenate([b[s][kept[s]] for s in seeds])
    mean, sd = float(flat.mean()), float(flat.std(ddof=1))
    half = stats.t.ppf(0.975, len(flat) - 1) * sd / math.sqrt(len(flat))
    low, high = mean - half, mean + half
    per_seed = {s: float(d.mean()) for s, d in diffs.items()}
    ok = low > -MARGIN if at_least else low > 0 and all(m > 0 for m in per_seed.values())
    text = (f"r with the teacher: {name_a} {sim_a.mean():.3f} ± {sim_a.std(ddof=1):.3f}, "
            f"{name_b} {sim_b.mean():.3f} ± {sim_b.std(ddof=1):.3f} (mean ± std over "
            f"{len(flat)} image maps with a defined r, on {len(seeds)} seeds); difference "
            f"{mean:+.3f} (95% CI {low:+.3f} to {high:+.3f}; per seed " + ", ".join(
                f"{s}: {m:+.3f}" for s, m in per_seed.items()) + ")")
    return (SUPPORTED if ok else NOT_SUPPORTED), text


def attends(run: Run, claim: AttendsLikeTeacher, attention: Attention) -> Verdict:
    numbers, verdicts = [], []
    mine_name = f"{run.label} student"
    for t, s in run.pairs():
        mine = chosen_trials(run, run.method, t, s)
        for other, at_least in [*((m, True) for m in claim.at_least_as),
                                *((m, False) for m in claim.more_than)]:
            theirs, name = chosen_trials(run, other, t, s), f"{method_label(other)} student"
            seeds = sorted(set(mine["seed"]) & set(theirs["seed"]))
            if len(seeds) < 2:
                verdicts.append(UNTESTED)
                numbers.append(f"{pair_label(t, s)}: {run.label} and {method_label(other)} "
                               f"students on {len(seeds)} common seed(s); a verdict needs 2 "
                               f"({other} in baselines or search.methods, and 2 seeds)")
                continue
            a, b = ({seed: attention.with_teacher(t, str(rows[rows["seed"] == seed].iloc[0][
                "trial_id"])) for seed in seeds} for rows in (mine, theirs))
            verdict, text = paired_line(a, b, mine_name, name, at_least)
            verdicts.append(verdict)
            numbers.append(f"{pair_label(t, s)}, vs {name} "
                           f"({'at least as' if at_least else 'more'} closely): {text}")
    return Verdict(claim.text, overall(verdicts), numbers, ATTENTION_RULE)


def head_closer(run: Run, claim: HeadCloserToTeacher, attention: Attention) -> Verdict:
    head_name = (method_class(run.method).heads or {}).get(claim.head, claim.head)
    numbers, verdicts = [], []
    for t, s in run.pairs():
        mine = chosen_trials(run, run.method, t, s)
        if mine["seed"].nunique() < 2:
            verdicts.append(UNTESTED)
            numbers.append(f"{pair_label(t, s)}: {run.label} on {mine['seed'].nunique()} "
                           "seed(s); a verdict needs 2")
            continue
        trials = {int(r["seed"]): str(r["trial_id"]) for _, r in mine.iterrows()}
        a = {seed: attention.with_teacher(t, tid, claim.head) for seed, tid in trials.items()}
        b = {seed: attention.with_teacher(t, tid) for seed, tid in trials.items()}
        verdict, text = paired_line(a, b, head_name, f"{run.label} student", at_least=False)
        verdicts.append(verdict)
        numbers.append(f"{pair_label(t, s)}: {text}")
    return Verdict(claim.text, overall(verdicts), numbers, ATTENTION_RULE)


def evaluate_claims(run: Run, n_images: int = 64, explain: bool = True,
                    log=print) -> list[Verdict]:
    """Every claim of the run's method, tested on the run (Grad-CAM++ on `n_images` test
    images where a claim is about attention; `explain=False` leaves those untested)."""
    cls = method_class(run.method)
    attention = None
    verdicts = []
    for claim in cls.claims if cls is not None else ():
        if isinstance(claim, BeatsTunedBaselines):
            verdicts.append(beats_tuned(run, claim))
        elif isinstance(claim, SettingBeats):
            verdicts.append(setting_beats(run, claim))
        elif not explain:
            verdicts.append(Verdict(claim.text, UNTESTED, ["Grad-CAM++ turned off (--no-gradcam)"],
                                    ATTENTION_RULE))
        else:
            if attention is None:
                log(f"report: claims: Grad-CAM++ on {n_images} test images per network and seed")
                attention = Attention(run, n_images)
            test = attends if isinstance(claim, AttendsLikeTeacher) else head_closer
            try:
                verdicts.append(test(run, claim, attention))
            except Skipped as why:
                verdicts.append(Verdict(claim.text, UNTESTED, [str(why)], ATTENTION_RULE))
    return verdicts
