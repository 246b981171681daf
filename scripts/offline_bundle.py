"""Pack this project's Python dependencies for an offline machine that already has torch.

GPU nodes of many clusters cannot reach a package index, but their image ships a CUDA build of
torch and torchvision, which must stay as it is. This script runs where pip works (in the
project's own environment), resolves every other dependency for the target's Python and
platform, and writes one tar.gz of installed packages. On the offline machine:

    mkdir -p /tmp/site && tar -xzf sdkd-deps.tar.gz -C /tmp/site
    export PYTHONPATH=/tmp/site:$PWD      # in the repository's root
    python benchmarks/run.py --only step_cost,gpu_packing,cifar_epoch

`--have` takes the target's `pip freeze` (or a list of names), and leaves out what it already
has. Ray's Java support (ray/jars, 31 MB of 48) is left out unless `--keep-java`: Python
workers never load it.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# The target's own CUDA builds; a bundled copy would shadow them.
ALWAYS_EXCLUDED = {"torch", "torchvision", "triton"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


class BundleError(Exception):
    """Bad input or a failed pip step: one line, exit code 2."""


def project_requirements() -> list[Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def read_have(path: Path | None) -> set[str]:
    """Names in a `pip freeze` file (or one name per line)."""
    if path is None:
        return set()
    if not path.is_file():
        raise BundleError(f"--have {path}: no such file; write it on the target with "
                          "`python3 -m pip freeze > have.txt`")
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(canonicalize_name(re.split(r"[=<>!~ @;\[]", line, maxsplit=1)[0]))
    return names


def split_torch_dependents(reqs: list[Requirement], excluded: set[str]):
    """Requirements that pull torch (grad-cam does) go in without their dependencies, and
    those dependencies, minus torch and the excluded ones, are resolved instead."""
    resolvable, no_deps = [], []
    for req in reqs:
        if canonicalize_name(req.name) in excluded:
            continue
        try:
            needs = [Requirement(r) for r in (md.requires(req.name) or [])]
        except md.PackageNotFoundError:
            raise BundleError(f"{req.name} is not installed here; run this with the project's "
                              "environment (.venv/bin/python, after `make setup`)") from None
        extras = ["", *req.extras]
        needs = [n for n in needs
                 if n.marker is None or any(n.marker.evaluate({"extra": e}) for e in extras)]
        if any(canonicalize_name(n.name) in ALWAYS_EXCLUDED for n in needs):
            no_deps.append(Requirement(f"{req.name}=={md.version(req.name)}"))
            resolvable += [n for n in needs if canonicalize_name(n.name) not in excluded]
        else:
            # The versions tested here, not whatever is newest.
            extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
            resolvable.append(Requirement(f"{req.name}{extras}=={md.version(req.name)}"))
    return resolvable, no_deps


def pip(*args: str, check: bool = True) -> bool:
    """Run pip quietly; a failure raises (or, unchecked, returns False)."""
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet",
                             "--disable-pip-version-check"], capture_output=True, text=True)
    if result.returncode != 0 and check:
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR")]
        raise BundleError("pip failed: " + (errors[-1] if errors else result.stderr.strip()))
    return result.returncode == 0


def target_args(python: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def resolve(reqs: list[Requirement], python: str, work: Path) -> list[tuple[str, str]]:
    """Exact (name, version) pins for `reqs` and their dependencies on the target."""
    report = work / "report.json"
    pip("install", "--dry-run", "--ignore-installed", "--target", str(work / "dry"),
        "--report", str(report), *target_args(python), *map(str, reqs))
    return [(i["metadata"]["name"], i["metadata"]["version"])
            for i in json.loads(report.read_text())["install"]]


def install_no_deps(pins: list[str], python: str, staging: Path, work: Path) -> None:
    """Fetch each pin's wheel for the target once, then install them all; a package with only
    a source release is built here, which is only portable when the result is pure Python."""
    wheels = work / "wheels"
    for pin in pins:
        fetched = pip("download", "--no-deps", "-d", str(wheels), *target_args(python), pin,
                      check=False)
        if not fetched:
            pip("wheel", "--no-deps", "-w", str(work / "built"), pin)
    built = sorted((work / "built").glob("*.whl"))
    impure = [w.name for w in built if not w.name.endswith("-py3-none-any.whl")]
    if impure:
        raise BundleError(f"{impure[0]} has no wheel for the target and is not pure Python; "
                          "install it on the target by other means and name it in --have")
    files = [str(w) for w in (*sorted(wheels.glob("*.whl")), *built)]
    pip("install", "--no-deps", "--no-index", "--target", str(staging), *target_args(python),
        *files)


def write_bundle(staging: Path, out: Path, keep_java: bool) -> None:
    if not keep_java:
        shutil.rmtree(staging / "ray" / "jars", ignore_errors=True)
    for cache in staging.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for item in sorted(staging.iterdir()):
            tar.add(item, arcname=item.name)
    partial.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="offline_bundle.py",
        description="Bundle this project's dependencies (all but torch and torchvision) as one "
                    "tar.gz for an offline Linux x86-64 machine that has torch.")
    parser.add_argument("output", type=Path, help="the tar.gz to write, e.g. sdkd-deps.tar.gz")
    parser.add_argument("--python", default="3.12", metavar="X.Y",
                        help="the target's Python version (default: 3.12)")
    parser.add_argument("--have", type=Path, metavar="FILE",
                        help="the target's `pip freeze`: packages it has are left out")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME",
                        help="leave this package out too (repeatable)")
    parser.add_argument("--keep-java", action="store_true",
                        help="keep Ray's Java jars (31 MB; only Java workers use them)")
    args = parser.parse_args(argv)
    try:
        if not re.fullmatch(r"3\.\d+", args.python):
            raise BundleError(f"--python {args.python}: give the version as X.Y, e.g. 3.12")
        if not args.output.name.endswith((".tar.gz", ".tgz")):
            raise BundleError(f"{args.output}: the bundle's name must end in .tar.gz")
        if not args.output.parent.is_dir():
            raise BundleError(f"{args.output.parent}: no such folder for the bundle")
        excluded = ALWAYS_EXCLUDED | read_have(args.have) | {canonicalize_name(s)
                                                             for s in args.skip}
        resolvable, no_deps = split_torch_dependents(project_requirements(), excluded)
        with tempfile.TemporaryDirectory(prefix="sdkd-bundle-") as tmp:
            work = Path(tmp)
            print(f"resolving {len(resolvable)} requirements for CPython {args.python} ...",
                  flush=True)
            pins = [f"{n}=={v}" for n, v in resolve(resolvable, args.python, work)
                    if canonicalize_name(n) not in excluded]
            pins += [str(r) for r in no_deps]
            print(f"installing {len(pins)} packages into the bundle ...", flush=True)
            staging = work / "site"
            install_no_deps(pins, args.python, staging, work)
            write_bundle(staging, args.output, args.keep_java)
            (args.output.with_name(args.output.name + ".txt")).write_text(
                "\n".join(sorted(pins, key=str.lower)) + "\n")
    except BundleError as err:
        print(f"offline_bundle.py: error: {err}", file=sys.stderr)
        return 2
    size = args.output.stat().st_size / 2**20
    print(f"wrote {args.output} ({size:.1f} MiB, {len(pins)} packages; list in "
          f"{args.output.name}.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
