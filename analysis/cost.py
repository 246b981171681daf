"""Cost beside accuracy: what each network of a run costs to run, and the students' scores
against it.

    python -m analysis.cost runs/<name>

Every architecture of the run's pairs (teachers and students) is measured on this machine's
CPU (sdkd_core/cost.py: parameters, MACs per image, latency at batch 1, throughput at batch
64); a student's cost does not depend on the method that trained it, so one row per
architecture serves every column of the tables. Written under report/tables/ (cost.csv,
cost.md) and report/plots/ (accuracy_vs_cost.{png,svg}: each method's student as the tables
choose it, mean ± std over seeds, and the teacher, against MACs per image).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from analysis.arch_cost import cost_frame  # noqa: E402
from analysis.cli import analysis_main  # noqa: E402
from analysis.plots import save  # noqa: E402
from analysis.published import TEACHER  # noqa: E402
from analysis.run import Run  # noqa: E402
from analysis.tables import comparison  # noqa: E402
from sdkd_core.files import atomic_write, write_text  # noqa: E402


def cost_markdown(run: Run, frame: pd.DataFrame) -> str:
    shown = frame.assign(
        params=frame["params"].map(lambda v: f"{v / 1e6:.3f} M"),
        macs=frame["macs"].map(lambda v: f"{v / 1e6:.2f} M"),
        latency_ms=frame["latency_ms"].map(lambda v: f"{v:.2f}"),
        throughput=frame["throughput"].map(lambda v: f"{v:.0f}"),
    ).rename(columns={"latency_ms": "latency, batch 1 (ms)",
                      "throughput": "images/s, batch 64", "macs": "MACs per image"})
    note = (f"{run.name}: what each network costs on this machine's CPU "
            f"({int(frame['threads'].iloc[0])} threads), input "
            f"{' x '.join(map(str, (run.info.in_channels, *run.info.view_shape)))}; a student "
            "costs the same whichever method trained it.")
    table = shown.drop(columns=["batch", "threads"]).to_markdown(index=False,
                                                                 disable_numparse=True)
    return f"{note}\n\n{table}\n"


def accuracy_vs_cost(run: Run, frame: pd.DataFrame, out: Path) -> list[Path]:
    long, _ = comparison(run)
    macs = frame.set_index("arch")["macs"] / 1e6
    task = run.task
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, ((teacher, student), g) in enumerate(long.groupby(["teacher", "student"],
                                                             sort=False)):
        colour = plt.get_cmap("tab10")(i % 10)
        for _, r in g.iterrows():
            x = macs[teacher] if r["column"] == TEACHER else macs[student]
            marker = "*" if r["column"] == TEACHER else "o"
            ax.errorbar(x, r["mean"], yerr=r["std"] if r["n"] > 1 else None, fmt=marker,
                        color=colour, ms=9 if marker == "*" else 5, capsize=3)
            ax.annotate(f"{r['column']}" + (f" ({teacher})" if r["column"] == TEACHER else ""),
                        (x, r["mean"]), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.margins(x=0.3)  # room for the labels beside the points
    ax.set_xlabel("MACs per image (millions, log scale)")
    ax.set_ylabel(f"test {task.axis_label()}, last epoch")
    ax.set_title(f"{run.name}: score against cost (students as the tables choose them; "
                 "star: teacher)", fontsize=9)
    ax.grid(alpha=0.3)
    return save(fig, out, "accuracy_vs_cost")


def write_cost(run: Run, out: Path | None = None) -> list[Path]:
    """cost.csv and cost.md under report/tables/, the figure under report/plots/ (or all in
    `out`)."""
    tables = out or run.folder.report_dir / "tables"
    plots = out or run.folder.report_dir / "plots"
    tables.mkdir(parents=True, exist_ok=True)
    frame = cost_frame(run)
    atomic_write(tables / "cost.csv", lambda tmp: frame.to_csv(tmp, index=False))
    write_text(tables / "cost.md", cost_markdown(run, frame))
    return [tables / "cost.csv", tables / "cost.md", *accuracy_vs_cost(run, frame, plots)]


def main(argv: list[str] | None = None) -> int:
    return analysis_main(argv, lambda run, args: write_cost(run, args.out), "analysis.cost",
                         __doc__, out="tables")


if __name__ == "__main__":
    sys.exit(main())
