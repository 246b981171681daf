"""Every benchmark in one run, written into docs/benchmarks.md with its command and machine.

    python benchmarks/run.py                 # all sections, into docs/benchmarks.md
    python benchmarks/run.py --quick         # a smoke run of all of them, into runs/
    python benchmarks/run.py --only step_cost,data_path
    python benchmarks/run.py --only image_stream

Each section replaces its own block of the document (between `<!-- bench:NAME -->` markers) and
leaves every other block, and the hand-written text around them, as it was; the targets table at
the top is rebuilt from the blocks present. Sections that need a GPU say so when there is none.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, Result

from sdkd_core.files import write_text

DOC = ROOT / "docs" / "benchmarks.md"
QUICK_DOC = ROOT / "runs" / "benchmarks-quick.md"


@dataclass(frozen=True)
class Section:
    title: str
    module: str  # benchmarks/<module>.py, with parse(argv) and measure(args) -> Result
    quick: tuple[str, ...] = ()
    full: tuple[str, ...] = ()

    def argv(self, quick: bool) -> list[str]:
        return list(self.quick if quick else self.full)

    def run(self, argv: list[str]) -> Result:
        m = importlib.import_module(self.module)
        return m.measure(m.parse(argv))


class CifarSection(Section):
    def argv(self, quick: bool) -> list[str]:
        import torch

        # A full epoch takes about half an hour on a 2-core CPU: there, a slice tells the rate.
        return list(self.full if torch.cuda.is_available() and not quick else self.quick)


SECTIONS: dict[str, Section] = {
    "step_cost": Section("Training-step cost and peak memory of each method", "step_cost",
                         quick=("--images", "640", "--rounds", "2")),
    "data_path": Section("Data path: throughput and share of a training step", "data_path",
                         quick=("--images", "4000", "--share-images", "1280", "--rounds", "2")),
    "ray_share": Section("Ray's share of the default sweep", "ray_share", quick=("--quick",)),
    "search_efficiency": Section("Search efficiency: TPE+ASHA against a full grid",
                                 "search_efficiency", quick=("--quick",)),
    "gpu_packing": Section("Trials sharing one GPU (fractional gpus_per_trial)", "gpu_packing",
                           quick=("--seconds", "20")),
    "cifar_epoch": CifarSection("CIFAR-100 resnet32x4 -> resnet8x4 SDKD epoch", "cifar_epoch",
                                quick=("--images", "640"), full=("--variants",)),
    "image_stream": Section("Image files: decode path, streamed loader, peak memory",
                            "image_stream",
                            quick=("--images", "256", "--rss-images", "128", "--epochs", "1",
                                   "--decode-files", "6", "--rounds", "1")),
}
BLOCK = re.compile(r"<!-- bench:(?P<name>\w+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->\n",
                   re.S)
TARGETS = re.compile(r"<!-- targets -->\n.*?<!-- /targets -->\n", re.S)
TARGET_ROW = re.compile(r"<!-- target (?P<row>.*?) -->")


def render_block(name: str, title: str, script: str, argv: list[str], result: Result,
                 seconds: float, quick: bool) -> str:
    command = " ".join(["python", f"benchmarks/{script}", *argv])
    stamp = dt.date.today().isoformat()
    rows = "".join(f"<!-- target {t.name}|{t.measured}|{t.goal}|{_verdict(t.reached)} -->\n"
                   for t in result.targets)
    return (f"<!-- bench:{name} -->\n## {title}{' (quick)' if quick else ''}\n\n"
            f"    {command}\n\n{result.markdown}\n\n"
            f"_Measured {stamp} by `python benchmarks/run.py"
            f"{' --quick' if quick else ''}` in {seconds:.0f} s._\n{rows}"
            f"<!-- /bench:{name} -->\n")


def _verdict(reached: bool | None) -> str:
    return {True: "reached", False: "**not reached**", None: "not measured"}[reached]


def targets_table(text: str) -> str:
    rows = [m["row"].split("|") for m in TARGET_ROW.finditer(text)]
    lines = ["<!-- targets -->", "| target | measured | goal | |", "|---|---|---|---|"]
    lines += [f"| {name} | {measured} | {goal} | {verdict} |"
              for name, measured, goal, verdict in rows]
    return "\n".join(lines) + "\n<!-- /targets -->\n"


def update(text: str, blocks: dict[str, str]) -> str:
    """`text` with each block replaced (or appended, in SECTIONS order) and the targets rebuilt."""
    present = {m["name"] for m in BLOCK.finditer(text)}
    text = BLOCK.sub(lambda m: blocks.get(m["name"], m.group(0)), text)
    for name in SECTIONS:
        if name in blocks and name not in present:
            text = text.rstrip("\n") + "\n\n" + blocks[name]
    table = targets_table(text)
    if TARGETS.search(text):
        return TARGETS.sub(lambda _: table, text)
    head, _, rest = text.partition("\n## ")
    return f"{head.rstrip()}\n\n{table}\n## {rest}" if rest else f"{text}\n{table}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes everywhere (minutes, not an hour); written to "
                        f"{QUICK_DOC.relative_to(ROOT)} unless --output is given")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections (default all: {', '.join(SECTIONS)})")
    p.add_argument("--output", default=None,
                   help=f"the Markdown file to update (default {DOC.relative_to(ROOT)})")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    out = Path(args.output) if args.output else (QUICK_DOC if args.quick else DOC)
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    for name in names:
        section = SECTIONS[name]
        script = f"{section.module}.py"
        print(f"== {name}: benchmarks/{script}", flush=True)
        argv_used = section.argv(args.quick)
        start = time.perf_counter()
        result = section.run(argv_used)
        seconds = time.perf_counter() - start
        print(result.markdown + "\n", flush=True)
        block = render_block(name, section.title, script, argv_used, result, seconds, args.quick)
        text = update(text, {name: block})
        write_text(out, text)  # after every section: a long run keeps what it measured
    print(f"wrote {out}")
    for m in TARGET_ROW.finditer(text):
        print("  " + " | ".join(m["row"].split("|")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
