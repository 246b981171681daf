"""Figures of a run: its score (accuracy, mIoU, RMSE: the task's metric) against each swept
parameter, learning curves, Optuna's view.

    python -m analysis.plots runs/<name>

- ablation_<param>: final accuracy of every drawn trial that ran all its epochs against the
  parameter (one colour per pair); parameters with few values show the mean and the spread
  over trials/seeds as a band, continuous ones their quantile bins. Dashed lines: the strongest
  baseline of each pair.
- learning_curves: per pair, test accuracy per epoch of the best student of the run's method
  (`search.method`) and of each extra network the method trains (its `heads`), with every
  fixed baseline (mean over seeds, band = std); the method's schedule marks for that trial's
  settings (e.g. a phase boundary) are dotted lines; a line whose runs were still improving
  at their last epoch (analysis/convergence.py) says so in its legend (†).
- optuna_importance / optuna_parallel: from optuna.db, by `optuna.visualization.matplotlib`.

Every figure is written as PNG and SVG under report/plots/.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)
from optuna.visualization import matplotlib as ovm  # noqa: E402

from analysis.cli import analysis_main  # noqa: E402
from analysis.convergence import MARK, cell_trend, late_gain, run_improving  # noqa: E402
from analysis.run import (  # noqa: E402
    Run,
    Skipped,
    method_class,
    method_label,
    method_order,
    pair_label,
)
from sdkd_core.distillers import method_config  # noqa: E402
from sdkd_core.files import atomic_write  # noqa: E402
from study.runfolder.trials import BASELINE, DRAWN

PAIR = "pair"
BINS = 5  # quantile bins for a continuous parameter
# Learning curves: the run's method's student in red, its heads and the baselines apart from it.
HEAD_STYLES = (("tab:orange", "s"), ("tab:purple", "^"), ("tab:brown", "D"), ("magenta", "v"))
BASELINE_COLOURS = ("tab:gray", "tab:blue", "tab:green", "tab:cyan", "tab:olive", "tab:pink",
                    "navy", "darkgreen", "peru")


def save(fig, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    atomic_write(paths[0], lambda tmp: fig.savefig(tmp, format="png", dpi=130,
                                                   bbox_inches="tight"))
    atomic_write(paths[1], lambda tmp: fig.savefig(tmp, format="svg", bbox_inches="tight"))
    plt.close(fig)
    return paths


def with_pair(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(**{PAIR: [pair_label(t, s) for t, s in
                                  zip(frame["teacher"], frame["student"], strict=True)]})


def strongest_baselines(run: Run, metric: str) -> dict[str, tuple[str, float]]:
    """{pair: (label, mean score)} of the best baseline per pair besides the run's own, in the
    task's direction."""
    fixed = with_pair(run.completed[(run.completed["role"] == BASELINE)
                                    & (run.completed["method"] != run.method)])
    out = {}
    for pair, g in fixed.groupby(PAIR):
        means = g.groupby("method")[metric].mean() * run.task.sign()
        out[pair] = (method_label(means.idxmax()), float(means.max()) * run.task.sign())
    return out


def ablation(run: Run, param: str, out: Path, metric: str | None = None) -> list[Path]:
    metric = metric or run.score
    owner = param.rpartition(".")[0] or run.method  # a setting's own method; the pair: any
    done = run.completed
    drawn = with_pair(done[(done["role"] == DRAWN) & (done["method"] == owner)
                           if param != PAIR else done["role"] == DRAWN])
    if param != PAIR and param not in drawn.columns:
        raise Skipped(f"{param} is not a column of results.csv")
    drawn = drawn[drawn[param].notna() & drawn[metric].notna()]
    if drawn.empty:
        raise Skipped(f"no drawn trial ran all its epochs, so nothing to plot against {param}")
    spec = run.search_space.get(param, {})
    # Choices and pairs are categories; drawn numbers keep their scale (binned when many).
    categorical = param == PAIR or spec.get("type") == "choice"
    few = categorical or (spec.get("type") not in ("uniform", "loguniform")
                          and drawn[param].nunique() <= 8)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    hue = PAIR if drawn[PAIR].nunique() > 1 and param != PAIR else None
    if few:
        data = drawn.assign(**{param: drawn[param].map(_category)}) if categorical else drawn
        common = dict(data=data, x=param, y=metric, hue=hue, ax=ax, native_scale=not categorical)
        sns.pointplot(**common, errorbar="sd", dodge=0.3 if hue else False, capsize=0.1)
        sns.stripplot(**common, dodge=hue is not None, alpha=0.35, legend=False)
    else:
        log = spec.get("type") == "loguniform"
        for i, (pair, g) in enumerate(drawn.groupby(PAIR)):
            colour = sns.color_palette()[i]
            ax.scatter(g[param], g[metric], color=colour, alpha=0.6, s=22,
                       label=f"{pair} trials")
            bins = pd.qcut(g[param].rank(method="first"), min(BINS, len(g)), labels=False)
            stats = g.groupby(bins).agg(x=(param, "median"), m=(metric, "mean"),
                                        s=(metric, "std")).fillna({"s": 0.0})
            ax.plot(stats["x"], stats["m"], color=colour, lw=2, label=f"{pair} bin mean")
            ax.fill_between(stats["x"], stats["m"] - stats["s"], stats["m"] + stats["s"],
                            color=colour, alpha=0.15)
        if log:  # plain numbers at 1, 2, 5 x 10^k: the default minor labels collide
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    for i, (pair, (method, acc)) in enumerate(strongest_baselines(run, metric).items()):
        ax.axhline(acc, ls="--", lw=1, color=sns.color_palette("muted")[i % 10],
                   label=f"{method} ({pair})")
    ax.set_xlabel(param if param != PAIR else "teacher → student")
    ax.set_ylabel(f"test {run.task.axis_label()}, "
                  f"{'last' if metric == run.score else 'best'} epoch")
    ax.set_title(f"{run.name}: {run.task.metric_name} vs {param} ({len(drawn)} trials that ran "
                 "all epochs)", fontsize=10)
    if param == PAIR:
        ax.tick_params(axis="x", labelrotation=15)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax.grid(alpha=0.3)
    return save(fig, out, f"ablation_{param.replace('.', '_')}")


def _category(value) -> str:
    """'2' rather than '2.0' for integer choices read back from CSV as floats."""
    return str(_number(value))


def ablation_params(run: Run) -> list[str]:
    params = list(run.search_space)
    if len(run.pairs()) > 1:
        params.append(PAIR)
    return params


def schedule_marks(run: Run, trial: pd.Series) -> dict[str, float]:
    """{name: epoch from 0} the run's method marks for the trial's own settings."""
    cls = method_class(run.method)
    if cls is None:
        return {}
    settings = cls.Config.keys()  # a method's settings, as results.csv names them: <name>.<key>
    known = {f"{run.method}.{key}" for key in settings}
    values = {k: _number(v) for k, v in trial.items() if k in known and pd.notna(v)}
    return cls.schedule_marks(method_config(run.method, values), run.n_epochs)


def _number(value):
    """2 rather than 2.0 for integers read back from CSV as floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def learning_curves(run: Run, out: Path) -> list[Path]:
    if run.epochs.empty:
        raise Skipped("epochs.csv is missing or empty")
    epochs = with_pair(run.epochs[run.epochs["trial_id"].isin(run.completed["trial_id"])])
    subject = with_pair(run.completed[run.completed["method"] == run.method])
    pairs = list(dict.fromkeys(epochs[PAIR]))
    if not pairs:
        raise Skipped("no trial ran all its epochs")
    cls = method_class(run.method)
    heads = cls.heads if cls is not None else {}
    score = run.score
    fixed = run.completed.loc[run.completed["role"] == BASELINE, ["trial_id", "method"]]
    baselines = method_order(set(fixed["method"]))
    colours = {m: BASELINE_COLOURS[i % len(BASELINE_COLOURS)] for i, m in enumerate(baselines)}
    fig, axes = plt.subplots(1, len(pairs), figsize=(6.2 * len(pairs), 4.2), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        mine = epochs[epochs[PAIR] == pair]
        for method in baselines:
            rows = mine[mine["trial_id"].isin(fixed.loc[fixed["method"] == method, "trial_id"])]
            name = f"{run.label} (defaults)" if method == run.method else method_label(method)
            if not rows.empty:
                ids = fixed.loc[fixed["method"] == method, "trial_id"]
                finals = run.completed.set_index("trial_id").loc[ids, score].tolist()
                late = cell_trend(run.epochs, ids.tolist(), finals, run.task).improving
                sns.lineplot(data=rows, x="epoch", y=score, errorbar="sd", ax=ax,
                             color=colours[method], label=f"{name} student (seed mean)"
                             + (f" {MARK} still improving" if late else ""))
        ours = subject[subject[PAIR] == pair]
        best = ours.nlargest(1, score) if run.task.mode == "max" else ours.nsmallest(1, score)
        if not best.empty:
            trial = best.iloc[0]
            rows = mine[mine["trial_id"] == trial["trial_id"]]
            late = run_improving(late_gain(run.epochs, trial["trial_id"], run.task), run.task)
            ax.plot(rows["epoch"], rows[score], color="tab:red", lw=2, marker="o",
                    label=f"{run.label} student (best trial, {trial['trial_id']})"
                    + (f" {MARK} still improving" if late else ""))
            for i, (key, name) in enumerate(heads.items()):
                column, (colour, marker) = f"{score}_{key}", HEAD_STYLES[i % len(HEAD_STYLES)]
                if column in rows and rows[column].notna().any():
                    ax.plot(rows["epoch"], rows[column], color=colour, lw=2, ls="--",
                            marker=marker, label=f"{name} (same trial)")
            for name, mark in schedule_marks(run, trial).items():
                if 0 < mark < run.n_epochs:  # epochs are 1-based here: after epoch `mark`
                    ax.axvline(mark + 0.5, color="black", ls=":", lw=1.2,
                               label=f"{name} (after epoch {mark:g})")
        ax.set_title(f"{pair}", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"test {run.task.axis_label()}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.suptitle(f"{run.name}: learning curves", fontsize=11)
    return save(fig, out, "learning_curves")


def optuna_figures(run: Run, out: Path) -> list[Path]:
    if not run.folder.optuna_db.is_file():
        raise Skipped("the run has no optuna.db (no drawn trials)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=run.name, storage=run.folder.optuna_url)
    except KeyError:
        raise Skipped(f"optuna.db holds no study named {run.name}") from None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        raise Skipped(f"Optuna's plots need at least 2 finished drawn trials ({len(done)} so far)")
    paths = []
    with warnings.catch_warnings(), plt.rc_context({"figure.figsize": (6.4, 3.6)}):
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        ax = ovm.plot_param_importances(study)
        # Optuna titles its axes on the left; replace that title rather than add a second.
        ax.set_title(f"{run.name}: hyperparameter importance (fANOVA) for {run.metric}",
                     fontsize=10, loc="left")
        paths += save(ax.figure, out, "optuna_importance")
    # Optuna sizes its figures from rcParams; a wide one keeps the axes' labels apart.
    with warnings.catch_warnings(), plt.rc_context({"figure.figsize": (12, 5)}):
        warnings.simplefilter("ignore")
        ax = ovm.plot_parallel_coordinate(study)
        ax.set_title(f"{run.name}: drawn trials (colour: {run.metric})", fontsize=10,
                     loc="left")
        ax.set_title("")
        paths += save(ax.figure, out, "optuna_parallel")
    return paths


def write_plots(run: Run, out: Path | None = None) -> tuple[list[Path], dict[str, str]]:
    """Every figure; returns (paths written, {figure: why it was skipped})."""
    out = out or run.folder.report_dir / "plots"
    sns.set_theme(style="whitegrid", context="notebook")
    steps = {f"ablation_{p}": (lambda p=p: ablation(run, p, out)) for p in ablation_params(run)}
    steps["learning_curves"] = lambda: learning_curves(run, out)
    steps["optuna"] = lambda: optuna_figures(run, out)
    written, skipped = [], {}
    for name, step in steps.items():
        try:
            written += step()
        except Skipped as why:
            skipped[name] = str(why)
            plt.close("all")
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    return analysis_main(argv, _print_plots, "analysis.plots", __doc__, out="plots")


def _print_plots(run: Run, args) -> list:
    written, skipped = write_plots(run, args.out)
    return [*written, *(f"skipped {name}: {why}" for name, why in skipped.items())]


if __name__ == "__main__":
    sys.exit(main())
