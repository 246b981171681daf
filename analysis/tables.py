"""Comparison tables, per teacher/student pair: every method a column.

    python -m analysis.tables runs/<name>

Columns: the teacher, the fixed baselines (registry order), then each tuned method (the
run's subject first) with its defaults, if it ran as a baseline, and tuned. A cell is the mean
± std over seeds of the trials that ran every epoch, with n; last-epoch and best-epoch
variants. The best cell of a row is bold; a Δ row gives each column minus the reference (the
first other method of `baselines:`); each tuned method's cells carry a Welch t-test against
the strongest column of another method (* p < 0.05, ** p < 0.01, ns; nothing under two
seeds). A cell whose runs were still improving at their last epoch (analysis/convergence.py)
is marked †: the budget decided it. CIFAR-100, ImageNet and Cityscapes rows show the published
numbers below. The cells are the task's metric (top-1, mIoU, RMSE; "best" in its direction),
then one table for each of its other metrics (top-5, pixel accuracy, AbsRel, ...). Markdown,
LaTeX and CSV (long form, every statistic, `late_gain` and `still_improving` included) under
report/tables/.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.arch_cost import cost_text, run_cost
from analysis.cli import analysis_main
from analysis.convergence import MARK, cell_trend, rule
from analysis.published import TEACHER, published_number
from analysis.run import Run, method_label, method_order, metric_key, pair_label
from analysis.selection import on_pair, selection_metric, tuned_trials
from analysis.significance import compare, lookup, stars
from sdkd_core.files import atomic_write, write_text
from sdkd_core.stats import mean_std, mean_std_text
from study.runfolder.trials import BASELINE


@dataclass
class Cell:
    values: list[float]
    trials: list[str] = field(default_factory=list)  # the runs behind the values, in order

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean_std(self.values)[0]

    @property
    def std(self) -> float:  # sample std over seeds; 0 for a single seed
        return mean_std(self.values)[1]


def subject_columns(run: Run) -> tuple[str, str]:
    """The columns of the run's own method: run with its defaults, and tuned by the search."""
    return method_columns(run.method)


def method_columns(method: str) -> tuple[str, str]:
    """A tuned method's two columns: with its defaults (as a baseline), and tuned."""
    label = method_label(method)
    return f"{label} (defaults)", f"{label} (tuned)"


def tuned_columns(run: Run) -> set[str]:
    """Every column of a tuned method: the cells the t-tests are about."""
    return {c for m in run.tuned_methods for c in method_columns(m)}


def owner_columns(run: Run, column: str) -> set[str]:
    """The columns of the same method as `column` (itself alone for an untuned one)."""
    return next((set(method_columns(m)) for m in run.tuned_methods
                 if column in method_columns(m)), {column})


def reference(run: Run) -> str | None:
    """The label the Δ row subtracts: the first method of `baselines:` besides the run's own."""
    first = next((m for m in run.baselines if m != run.method), None)
    return None if first is None else method_columns(first)[0] \
        if first in run.tuned_methods else method_label(first)


def cells_for_pair(run: Run, teacher: str, student: str, metric: str) -> dict[str, Cell]:
    done = on_pair(run, teacher, student, metric)
    cells: dict[str, Cell] = {}
    card = run.teacher_cards.get(teacher)
    if card is not None and metric in card:
        cells[TEACHER] = Cell([float(card[metric])])
    fixed = done[done["role"] == BASELINE]
    tuned_methods = run.tuned_methods

    def cell(rows: pd.DataFrame) -> Cell:
        return Cell(rows[metric].tolist(), rows["trial_id"].tolist())

    for method in method_order(set(fixed["method"]) - set(tuned_methods)):
        cells[method_label(method)] = cell(fixed[fixed["method"] == method])
    for method in tuned_methods:  # the run's subject first
        defaults, tuned = method_columns(method)
        if (fixed["method"] == method).any():
            cells[defaults] = cell(fixed[fixed["method"] == method])
        chosen = tuned_trials(run, method, teacher, student, metric)
        if not chosen.empty:
            cells[tuned] = cell(chosen)
    return cells


def published(run: Run, teacher: str, student: str, column: str) -> float:
    """The papers' CIFAR-100 number of a column (a tuned method's under both its columns)."""
    owner = next((m for m in run.tuned_methods if column in method_columns(m)), None)
    return published_number(run.dataset, teacher, student,
                            method_label(owner) if owner else column)


def comparison(run: Run, metric: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long form: one row per pair and column with mean, std, n, delta to the reference, the
    strongest other method's column and the Holm-adjusted p against it, best; every test of
    the table: `significance.compare`). `metric` is a results column, the run's score by
    default; "best" and "strongest" follow its direction (the smallest RMSE)."""
    metric = metric or run.score
    key, task = metric_key(metric), run.task
    sign = task.sign(key)
    rows, tested, ref = [], tuned_columns(run), reference(run)
    by_pair = {pair: cells_for_pair(run, *pair, metric) for pair in run.pairs()}
    tests = compare({pair: {k: c.values for k, c in cells.items() if k != TEACHER}
                     for pair, cells in by_pair.items()}, tested)
    for (teacher, student), cells in by_pair.items():
        students = {k: c for k, c in cells.items() if k != TEACHER}
        if not students:
            continue
        base = cells.get(ref) if ref else None
        best = max(students, key=lambda k: sign * students[k].mean)
        for column, cell in cells.items():
            others = {k: c for k, c in students.items() if k not in owner_columns(run, column)}
            strongest = max(others, key=lambda k: sign * others[k].mean) \
                if column in tested and others else ""
            test = lookup(tests, teacher, student, column, strongest) if strongest else None
            trend = cell_trend(run.epochs, cell.trials, cell.values, task) \
                if cell.trials else None
            rows.append({
                "teacher": teacher, "student": student, "column": column, "metric": metric,
                "mean": cell.mean, "std": cell.std, "n": cell.n,
                "reference": ref if base else "",
                "delta": cell.mean - base.mean if base and column != TEACHER else math.nan,
                "versus": strongest, "p_value": test.p_holm if test else None,
                "best": column == best,
                "published": published(run, teacher, student, column)
                if key == task.metric else math.nan,
                "late_gain": trend.mean_gain if trend else math.nan,
                "gain_threshold": trend.threshold if trend else math.nan,
                "still_improving": bool(trend and trend.improving),
                **cost_columns(run, teacher if column == TEACHER else student),
            })
    return pd.DataFrame(rows), pd.DataFrame([c.row() for c in tests])


def cost_columns(run: Run, arch: str) -> dict:
    """What the cell's network costs on this machine (a student the same for every method)."""
    cost = run_cost(run, arch)
    return {"arch": arch, "params": cost.params, "macs": cost.macs,
            "latency_ms": round(cost.latency_ms, 3)}


def _cell_text(r, bold, pm: str, digits: int) -> str:
    if r["column"] == TEACHER:
        return f"{r['mean']:.{digits}f}"
    text = mean_std_text(r["mean"], r["std"], r["n"], pm, digits)
    text = bold(text) if r["best"] else text
    mark = stars(r["p_value"]) if isinstance(r["p_value"], int | float) else ""
    budget = MARK if r["still_improving"] else ""
    return f"{text}{mark}{budget} (n={r['n']})"


def wide(long: pd.DataFrame, bold, pm: str = "±", delta_fmt: str = "{:+.2f}",
         digits: int = 2) -> pd.DataFrame:
    """The reader's table: rows per pair (the scores, then Δ vs the reference, then
    published), `digits` decimals."""
    if long.empty:
        return pd.DataFrame()
    columns = list(dict.fromkeys(long["column"]))
    columns = [TEACHER, *[c for c in columns if c != TEACHER]] if TEACHER in columns else columns
    table = []
    for (teacher, student), g in long.groupby(["teacher", "student"], sort=False):
        by = {r["column"]: r for _, r in g.iterrows()}
        label = pair_label(teacher, student)
        table.append({"pair": label, **{c: _cell_text(by[c], bold, pm, digits) if c in by else "—"
                                         for c in columns}})
        ref = g["reference"].iloc[0]
        if ref:
            table.append({"pair": f"Δ vs {ref}", **{
                c: delta_fmt.format(by[c]["delta"])
                if c in by and not math.isnan(by[c]["delta"]) else "" for c in columns}})
        if g["published"].notna().any():
            table.append({"pair": "published", **{
                c: f"{by[c]['published']:.{digits}f}" if c in by
                and not math.isnan(by[c]["published"])
                else "" for c in columns}})
        table.append({"pair": "cost", **{c: cost_text(by[c]) if c in by else ""
                                         for c in columns}})
    return pd.DataFrame(table).set_index("pair")


def write_tables(run: Run, out: Path | None = None) -> list[Path]:
    """comparison_<table>.{md,tex,csv} and every test, tests_<table>.csv, under report/tables/
    for each table of `Run.table_metrics` (last, best, then top5, pixel_acc, absrel, ... where
    the trials measured them); returns the paths."""
    out = out or run.folder.report_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for metric, (kind, what) in run.table_metrics().items():
        long, tests = comparison(run, metric)
        digits = run.task.digits(metric_key(metric))
        stem = out / f"comparison_{kind}"
        note = caption(run, long, what, metric)
        atomic_write(stem.with_suffix(".csv"), lambda tmp, t=long: t.to_csv(tmp, index=False))
        atomic_write(out / f"tests_{kind}.csv", lambda tmp, t=tests: t.to_csv(tmp, index=False))
        written.append(out / f"tests_{kind}.csv")
        md = wide(long, lambda s: f"**{s}**", delta_fmt=f"{{:+.{digits}f}}", digits=digits)
        write_text(stem.with_suffix(".md"), f"{note}\n\n{md.to_markdown(disable_numparse=True)}\n")
        tex = wide(long, lambda s: f"\\textbf{{{s}}}", pm="$\\pm$",
                   delta_fmt=f"${{:+.{digits}f}}$", digits=digits).rename(columns=_tex_escape)
        tex.index = tex.index.map(_tex_escape)
        tex.index.name = None
        latex = tex.style.to_latex(hrules=True, column_format="l" + "r" * len(tex.columns),
                                   caption=_tex_escape(note))
        write_text(stem.with_suffix(".tex"), latex)
        written += [stem.with_suffix(s) for s in (".md", ".tex", ".csv")]
    return written


def caption(run: Run, long: pd.DataFrame, what: str, metric: str | None = None) -> str:
    ref, shown = reference(run), set(long["column"]) if not long.empty else set()
    task = run.task
    scored = task.axis_label(metric_key(metric or run.score))
    parts = [f"{run.name}: {run.dataset} test {scored}, {what}, mean ± std over seeds "
             f"({run.n_epochs} epochs). Bold: best student."]
    if shown & tuned_columns(run):
        who = " and ".join(method_label(m) for m in run.tuned_methods)
        each = " each" if len(run.tuned_methods) > 1 else ""
        parts.append(f"{who}{each} vs the strongest other baseline, Welch's t-test, p adjusted "
                     "by Holm over every comparison of the table (each tuned method's cells "
                     "against every other column; all in tests_*.csv with the difference of "
                     "means and its 95% CI): * p<0.05, ** p<0.01, ns not significant.")
    by_validation = selection_metric(run.completed, run.score, task).startswith("val_")
    name = task.metric_name
    for method in run.tuned_methods:
        (defaults, tuned), label = method_columns(method), method_label(method)
        if defaults in shown:
            parts.append(f"'{defaults}' is {label} with its default settings, run as a "
                         "baseline.")
        if tuned in shown:
            parts.append(f"'{tuned}' is {label}'s drawn configuration with the best mean " + (
                f"validation {name} (held-out training images), reported on the test set, "
                "which took no part in the choice" if by_validation else
                f"test {name}, chosen on the test set (optimistic)") +
                "; after a confirming run, its mean covers every seed.")
    if ref and ref in shown:
        parts.append(f"Δ vs {ref}: each column minus {ref}, the first other method of the "
                     "space's baselines.")
    if not long.empty and long["still_improving"].any():
        parts.append(f"{rule(task)}.")
    if not long.empty:
        parts.append("Cost: each network's parameters, MACs per image and latency at batch 1 "
                     f"on this machine's CPU ({run_cost(run, long['arch'].iloc[0]).threads} "
                     "threads); a student costs the same whichever method trained it.")
    return " ".join(parts)


def _tex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                 ("#", "\\#"), ("±", "$\\pm$"), ("†", "$^\\dagger$"), ("→", "$\\to$"),
                 ("Δ", "$\\Delta$"), ("<", "$<$"), ("·", "$\\cdot$")):
        text = text.replace(a, b)
    return text


def main(argv: list[str] | None = None) -> int:
    return analysis_main(argv, _print_tables, "analysis.tables", __doc__, out="tables")


def _print_tables(run: Run, args) -> list:
    """The files written, then the last-epoch table (an empty line when written elsewhere)."""
    written, table = write_tables(run, args.out), run.folder.report_dir / "tables"
    return [*written, "" if args.out else (table / "comparison_last.md").read_text()]


if __name__ == "__main__":
    sys.exit(main())
