"""The layout rules the rest of the project relies on."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_sdkd_core_has_no_ray_and_no_study_imports():
    for path in (ROOT / "sdkd_core").rglob("*.py"):
        imports = imported_modules(path)
        assert "ray" not in imports, path
        assert not imports & {"study", "analysis"}, path


def test_every_method_file_is_registered():
    from sdkd_core.distillers import METHODS

    files = {p.stem for p in (ROOT / "sdkd_core" / "distillers").glob("*.py")}
    assert files - {"__init__", "base"} == set(METHODS)
