"""The layout docs/architecture.md describes, enforced: which package may import which, no
import circles, imports at the top of modules (or a comment saying why not), modules of one
idea (about 400 lines at most), and methods that describe themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sdkd_core", "study", "analysis")
MAX_LINES = 400  # about: one module, one idea; never split only to meet a count
# The user's command may run the report after the sweep; no other module of study may.
ENTRY = ROOT / "study" / "sweep.py"
# Entry scripts that only hand over to the analysis (no logic of their own).
HANDOVERS = {ROOT / "study" / "export.py"}


def sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def test_sdkd_core_imports_neither_ray_nor_the_layers_above_it():
    for path in sources("sdkd_core"):
        bad = {m for m in imported_modules(path) if top(m) in ("ray", "study", "analysis")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_study_never_imports_analysis_but_its_entry_runs_the_report():
    for path in sources("study"):
        bad = {m for m in imported_modules(path) if top(m) == "analysis"}
        if path == ENTRY:
            assert bad, "study/sweep.py should build the report after the sweep"
        elif path not in HANDOVERS:
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_analysis_reads_study_only_through_the_run_folder_contract():
    for path in sources("analysis"):
        study = {m for m in imported_modules(path) if top(m) == "study"}
        bad = {m for m in study if m != "study.runfolder"
               and not m.startswith("study.runfolder.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_run_folder_contract_needs_no_ray():
    for path in sources("study/runfolder"):
        bad = {m for m in imported_modules(path) if top(m) in ("ray", "analysis")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("folder", [*PACKAGES, "benchmarks", "tests"])
def test_no_source_file_is_over_about_400_lines(folder):
    long = {str(p.relative_to(ROOT)): n for p in sources(folder)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"more than one idea in these modules? {long}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_circles():
    """Among the project's own modules, counting imports inside functions too (which would
    only hide a circle)."""
    paths = sources(*PACKAGES)
    modules = {module_name(p): p for p in paths}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def edges(path: Path) -> set[str]:
        """The project's modules `path` imports (`from package import module` names the
        module, not the package)."""
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in modules else node.module)
        return {r for n in found if (r := resolve(n))}

    graph = {m: edges(p) - {m} for m, p in modules.items()}
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError(f"import circle: {' -> '.join(stack[stack.index(node):])} "
                                 f"-> {node}")
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node])
        done.add(node)

    for m in sorted(graph):
        visit(m, [])


def test_imports_inside_functions_say_why():
    """An import belongs at the top of its module; one inside a function says why in a comment
    on its line or just above its block of imports (a measured start-up cost, a library that
    must not load before its settings)."""
    unexplained = []
    for path in sources(*PACKAGES):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom) and \
                        not _explained(lines, node.lineno - 1, node.end_lineno):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not unexplained, f"imports inside functions without a reason: {unexplained}"


def _explained(lines: list[str], first: int, end: int) -> bool:
    """A comment on the import's own lines, or above it past blank lines and other imports
    (one comment may explain a block of them)."""
    if any("#" in line for line in lines[first:end]):
        return True
    i = first - 1
    while i >= 0 and (not lines[i].strip() or lines[i].strip().startswith(("import ", "from "))):
        if "#" in lines[i]:
            return True
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")
