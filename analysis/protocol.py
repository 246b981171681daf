"""The report's opening: the protocol the run followed, and the verdict on each claim of its
method, as HTML and as report/claims.csv."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from analysis.claims import SUPPORTED, UNTESTED, Verdict
from analysis.run import Run, method_label
from analysis.selection import selection_metric
from sdkd_core.files import atomic_write
from study.runfolder.trials import DRAWN


def protocol_lines(run: Run) -> list[str]:
    """The protocol in sentences: data split, seeds, search budget per method, selection."""
    d, search = run.space["dataset"], run.space.get("search") or {}
    split = d.get("val_split")
    held = "no validation split" if split is None else (
        f"a validation split of {split}" + (" of the training images" if isinstance(split, float)
                                            else " images")
        + " held out before any training (stratified, fixed by the data seed; never trained on)")
    lines = [
        f"Data: {run.dataset}, {d.get('n_train') or 'all'} training images, {held}, "
        f"{d.get('n_test') or 'all'} test images. Every student trains {run.n_epochs} epochs "
        "with the same recipe (except where a pair's own recipe says otherwise).",
        f"Seeds: {run.space.get('seeds')}; the search draws on the first, and each tuned "
        "method's chosen configuration is run again on every other seed.",
    ]
    search_rows = run.results[run.results["role"] == DRAWN]
    budget = []
    for method in run.tuned_methods:
        mine = search_rows[search_rows["method"] == method]
        budget.append(f"{method_label(method)} {len(mine)} drawn trials, "
                      f"{int(mine['epochs'].sum())} epochs")
    if budget:
        asha = (f"ASHA (first rung at epoch {run.first_rung}, reduction "
                f"{search.get('reduction_factor')})" if run.first_rung is not None
                else "no early stopping")
        lines.append(f"Search: the same budget for each tuned method — Optuna "
                     f"{search.get('sampler', 'tpe')} sampler, {search.get('num_samples')} "
                     f"samples, one study each, {asha}, "
                     f"{'minimising' if run.record.get('mode') == 'min' else 'maximising'} "
                     f"{run.metric}. "
                     f"Spent: {'; '.join(budget)}. "
                     "Untuned methods run at their defaults.")
    task = run.task
    by_validation = selection_metric(run.completed, run.score, task).startswith("val_")
    way = "" if task.mode == "max" else " (the lowest)"
    lines.append("Selection: each tuned method's configuration with the best mean " + (
        f"validation {task.metric_name}{way} over its seeds; the test set took no part in any "
        "choice and is only reported." if by_validation else
        f"test {task.metric_name}{way} over its seeds — the run held out no validation split, "
        "so its tuned numbers are chosen on the test set and optimistic."))
    lines.append("Statistics: Welch's t-test over seeds, Holm's correction over every "
                 "comparison of a table; differences with 95% confidence intervals in "
                 "report/tables/tests_*.csv.")
    return lines


def protocol_html(run: Run) -> str:
    return ("<h2 id='protocol'>Protocol</h2><ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in protocol_lines(run))
            + "</ul>")


def claims_html(run: Run, verdicts: list[Verdict], csv: Path, base: Path) -> str:
    if not verdicts:
        return (f"<h2 id='claims'>Claims</h2><p class='note'>{html.escape(run.label)} declares "
                "no claims to test (its `claims` attribute is empty).</p>")
    seeds = len(run.space.get("seeds") or [])
    out = [f"<h2 id='claims'>Claims of the {html.escape(run.label)} paper, tested on this "
           "run</h2>"]
    if seeds < 2:
        out.append(f"<p class='note'>This run has {seeds} seed; a verdict needs n &ge; 2 seeds "
                   "on each side of a comparison, so every claim below is not tested here. "
                   "Add seeds to the space file to test them.</p>")
    out.append("<table><thead><tr><th>claim</th><th>verdict</th><th>numbers</th>"
               "</tr></thead><tbody>")
    colours = {SUPPORTED: "#060", UNTESTED: "#777"}
    for i, v in enumerate(verdicts, start=1):
        colour = colours.get(v.verdict, "#a00")
        numbers = "<br>".join(html.escape(n) for n in v.numbers)
        out.append(f"<tr><td>({i}) {html.escape(v.claim)}</td>"
                   f"<td style='color:{colour}'><b>{html.escape(v.verdict)}</b></td>"
                   f"<td>{numbers}<br><span class='note'>Rule: {html.escape(v.rule)}</span>"
                   "</td></tr>")
    out.append("</tbody></table>")
    rel = html.escape(csv.relative_to(base).as_posix())
    out.append(f"<p class='note'>Also in <a href='{rel}'>{rel}</a>.</p>")
    return "".join(out)


def write_claims(verdicts: list[Verdict], out: Path) -> Path:
    frame = pd.DataFrame([v.row() for v in verdicts],
                         columns=["claim", "verdict", "numbers", "rule"])
    atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False))
    return out
