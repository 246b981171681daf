"""The whole report of a run, rebuilt from its run folder alone.

    python -m analysis.report runs/<name> [--images 64] [--no-gradcam]

Writes the tables, the plots and the Grad-CAM++ report under <run>/report/ and one page,
report/index.html, that shows and links all of them with relative paths (no scripts, no network:
it reads the same offline, copied elsewhere, or served). The sweep calls it when it ends.
"""

from __future__ import annotations

import html
import os
import sys
import time
from pathlib import Path

import pandas as pd

from analysis.claims import evaluate_claims
from analysis.cli import analysis_main
from analysis.protocol import claims_html, protocol_html, write_claims
from analysis.run import Run, Skipped, load_run, method_class, method_label
from analysis.tables import write_tables
from sdkd_core.files import write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr:nth-child(even) { background: #f7f7f7; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: .9em; }
.skipped { color: #a40; }
nav a { margin-right: 1em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr));
        gap: 0 1.5em; }
"""


def _rel(path: Path, base: Path) -> str:
    return html.escape(Path(os.path.relpath(path, base)).as_posix())


def figure(path_png: Path, base: Path, caption: str) -> str:
    svg = path_png.with_suffix(".svg")
    links = f' (<a href="{_rel(svg, base)}">SVG</a>)' if svg.exists() else ""
    return (f'<figure><img src="{_rel(path_png, base)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}{links}</figcaption></figure>")


def markdown_table_to_html(md: Path) -> str:
    """The Markdown table's cells as HTML (bold marks kept), its note as a caption."""
    note, _, body = md.read_text().partition("\n\n")
    lines = [line.strip().strip("|") for line in body.strip().splitlines()]
    header = [c.strip() for c in lines[0].split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in lines[2:]]

    def cell(text: str, tag: str) -> str:
        text = html.escape(text)
        if text.startswith("**"):
            head, _, tail = text[2:].partition("**")
            text = f"<b>{head}</b>{tail}"
        return f"<{tag}>{text}</{tag}>"

    out = ["<table><thead><tr>", *(cell(h, "th") for h in header), "</tr></thead><tbody>"]
    for row in rows:
        out += ["<tr>", *(cell(c, "td") for c in row), "</tr>"]
    out.append("</tbody></table>")
    return f'<p class="note">{html.escape(note)}</p>' + "".join(out)


def summary_html(run: Run) -> str:
    counts = run.results["status"].value_counts()
    statuses = ", ".join(f"{n} {s}" for s, n in counts.items())
    by_method = run.results.groupby(["role", "method"]).size()
    trials = ", ".join(f"{method_label(m)} ({r}) {n}" for (r, m), n in by_method.items())
    task = run.task
    teachers = "; ".join(f"{a}: {task.metric_name} {task.show(c[run.score])} on {c['n_test']} "
                         "test images" for a, c in run.teacher_cards.items()
                         if run.score in c) or "none kept"
    d = run.space["dataset"]
    return (f"<p>Dataset <b>{html.escape(run.dataset)}</b> ({d.get('n_train') or 'all'} train /"
            f" {d.get('n_test') or 'all'} test images), {run.n_epochs} epochs per student, "
            f"seeds {html.escape(str(run.space.get('seeds')))}. Method studied: "
            f"<b>{html.escape(run.label)}</b> (search.method {html.escape(run.method)}).<br>"
            f"Trials: {len(run.results)} ({html.escape(statuses)}) — {html.escape(trials)}.<br>"
            f"Pretrained teachers: {html.escape(teachers)}.</p>")


def curves_caption(run: Run) -> str:
    cls = method_class(run.method)
    heads = list(cls.heads.values()) if cls is not None else []
    return (f"Test {run.task.metric_name} per epoch: the best {run.label} student"
            + (f" and, from the same trial, {', '.join(heads)}" if heads else "")
            + "; the students of the fixed baselines (mean over seeds, band: std); dotted "
            f"lines: {run.label}'s schedule marks for that trial's settings, if it has any.")


def build_report(path: str | Path, n_images: int = 64, gradcam: bool = True,
                 log=print) -> Path:
    """The report of the run folder at `path` (see `write_report`)."""
    return write_report(load_run(path), n_images, gradcam, log)


def write_report(run: Run, n_images: int = 64, gradcam: bool = True, log=print) -> Path:
    """Write every artefact and report/index.html; returns the page's path."""
    # These take 5 s and more to import (torch, grad-cam, cv2, matplotlib, seaborn), this
    # module under 1 s: only once the folder is known to be a run folder, so a wrong path is
    # refused at once.
    from analysis.gradcam import write_gradcam
    from analysis.plots import write_plots  # as above

    report = run.folder.report_dir
    report.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sections: list[str] = []
    skipped: dict[str, str] = {}

    log(f"report: tables for {run.name}")
    tables = write_tables(run)
    verdicts = evaluate_claims(run, n_images, explain=gradcam, log=log)
    claims_csv = write_claims(verdicts, report / "claims.csv")
    sections.append(protocol_html(run) + claims_html(run, verdicts, claims_csv, report))
    parts = ["<h2 id='tables'>Comparison with the baselines</h2>"]
    for md in (p for p in tables if p.suffix == ".md"):
        parts.append(markdown_table_to_html(md))
        files = [md.with_suffix(s) for s in (".md", ".tex", ".csv")]
        parts.append('<p class="note">Download: ' + " · ".join(
            f'<a href="{_rel(f, report)}">{f.name}</a>' for f in files) + "</p>")
    sections.append("".join(parts))

    log("report: cost of each network on this machine")
    from analysis.cost import write_cost  # matplotlib and the models: as above

    cost_files = {p.name: p for p in write_cost(run)}
    sections.append(
        "<h2 id='cost'>Cost beside accuracy</h2>"
        + markdown_table_to_html(cost_files["cost.md"])
        + figure(cost_files["accuracy_vs_cost.png"], report,
                 f"Test {run.task.metric_name} (mean ± std over seeds) of each method's student "
                 "as the tables choose it, and of the teacher (star), against MACs per image.")
        + f'<p class="note">Numbers: <a href="{_rel(cost_files["cost.csv"], report)}">'
        "cost.csv</a>; each student exports with its model card: "
        f"<code>python study/export.py {html.escape(str(run.root))}</code>.</p>")

    log("report: plots")
    plots, why = write_plots(run)
    skipped.update(why)
    pngs = [p for p in plots if p.suffix == ".png"]
    captions = {
        "learning_curves": curves_caption(run),
        "optuna_importance": f"Which swept parameter mattered for {run.metric}, the metric "
                             "the search optimised (Optuna, fANOVA).",
        "optuna_parallel": "Every finished drawn trial across the swept parameters.",
    }
    ablations = [p for p in pngs if p.stem.startswith("ablation_")]
    name = run.task.metric_name
    sections.append(f"<h2 id='ablations'>Ablations: {html.escape(name)} against each swept "
                    "parameter</h2><div class='grid'>" + "".join(
                        figure(p, report, f"{name} vs {p.stem[9:]}; dashed lines: the "
                               "strongest baseline of each pair.") for p in ablations)
                    + "</div>")
    curves = [p for p in pngs if p.stem == "learning_curves"]
    sections.append("<h2 id='curves'>Learning curves</h2>"
                    + "".join(figure(p, report, captions[p.stem]) for p in curves))
    optuna_figs = [p for p in pngs if p.stem.startswith("optuna_")]
    sections.append("<h2 id='optuna'>Search: Optuna's view</h2><div class='grid'>"
                    + "".join(figure(p, report, captions[p.stem]) for p in optuna_figs)
                    + "</div>")

    cam = ["<h2 id='gradcam'>Where the networks look: Grad-CAM++ and CKA</h2>"]
    if gradcam:
        log(f"report: Grad-CAM++ on {n_images} test images")
        try:
            files = write_gradcam(run, n_images=n_images)
            by_name = {p.name: p for p in files}
            sim = pd.read_csv(by_name["similarity.csv"])
            cam.append(figure(by_name["overlays.png"], report,
                              f"Grad-CAM++ of {run.task.explains}, last stage of each "
                              "network."))
            cam.append(figure(by_name["similarity.png"], report,
                              f"Pairwise similarity over {sim['images'].max()} test images: "
                              "Grad-CAM++ maps (Pearson, cosine) and pooled features (linear "
                              "CKA)."))
            cam.append('<p class="note">Numbers: <a href="'
                       f'{_rel(by_name["similarity.csv"], report)}">similarity.csv</a> (mean and'
                       f' std over images), maps: <a href="{_rel(by_name["maps.npz"], report)}">'
                       "maps.npz</a></p>")
        except Skipped as reason:
            skipped["gradcam"] = str(reason)
    else:
        skipped["gradcam"] = "turned off (--no-gradcam)"
    sections.append("".join(cam))

    if skipped:
        sections.append("<h2 id='skipped'>Not shown</h2><ul>" + "".join(
            f"<li class='skipped'><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
            for k, v in skipped.items()) + "</ul>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(run.name)}: {html.escape(run.label)} study report</title>
<style>{STYLE}</style></head>
<body>
<h1>{html.escape(run.name)}: {html.escape(run.label)} study report</h1>
<nav><a href="#protocol">protocol</a><a href="#claims">claims</a><a href="#tables">tables</a>
<a href="#cost">cost</a>
<a href="#ablations">ablations</a><a href="#curves">learning curves</a>
<a href="#optuna">search</a><a href="#gradcam">Grad-CAM++</a></nav>
{summary_html(run)}
{"".join(sections)}
<p class="note">Rebuild: <code>python -m analysis.report {html.escape(str(run.root))}</code>.
Sources: <a href="{_rel(run.folder.results_csv, report)}">results.csv</a>,
<a href="{_rel(run.folder.epochs_csv, report)}">epochs.csv</a>,
<a href="{_rel(run.folder.space_yaml, report)}">space.yaml</a>.</p>
</body></html>
"""
    index = write_text(report / "index.html", page)
    log(f"report: {index} ({time.perf_counter() - started:.0f} s)")
    return index


def main(argv: list[str] | None = None) -> int:
    return analysis_main(argv, _print_report, "analysis.report", __doc__,
                         images="the Grad-CAM++ similarities", no_gradcam=True)


def _print_report(run: Run, args) -> list[Path]:
    return [write_report(run, n_images=args.images, gradcam=not args.no_gradcam)]


if __name__ == "__main__":
    sys.exit(main())
