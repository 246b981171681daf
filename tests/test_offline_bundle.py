"""scripts/offline_bundle.py: what goes into the bundle, and its bad input."""

import importlib.metadata as md
import importlib.util
from pathlib import Path

import pytest
from conftest import ROOT, assert_usage_error, run_cli
from packaging.utils import canonicalize_name

spec = importlib.util.spec_from_file_location("offline_bundle",
                                              ROOT / "scripts" / "offline_bundle.py")
bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bundle)


def names(reqs):
    return {canonicalize_name(r.name) for r in reqs}


def test_torch_stays_out_and_torch_dependents_come_without_dependencies():
    resolvable, no_deps = bundle.split_torch_dependents(bundle.project_requirements(),
                                                        bundle.ALWAYS_EXCLUDED)
    assert not (names(resolvable) | names(no_deps)) & {"torch", "torchvision"}
    # grad-cam needs torch: it comes alone, pinned, and its other needs are resolved.
    assert [str(r) for r in no_deps] == [f"grad-cam=={md.version('grad-cam')}"]
    assert {"ttach", "opencv-python-headless", "scikit-learn"} <= names(resolvable)
    # Everything else is pinned to the version tested here, extras kept.
    ray = next(r for r in resolvable if r.name == "ray")
    assert ray.extras == {"tune", "train"} and str(ray.specifier) == f"=={md.version('ray')}"


def test_have_names_what_the_target_already_has(tmp_path):
    freeze = tmp_path / "have.txt"
    freeze.write_text("# the target\nPyYAML==6.0.2\nnumpy>=2\ntorch @ file:///wheels/torch.whl\n"
                      "-e git+https://example.org/x#egg=x\nopencv_python_headless\n\n")
    have = bundle.read_have(freeze)
    assert have == {"pyyaml", "numpy", "torch", "opencv-python-headless"}
    resolvable, _ = bundle.split_torch_dependents(bundle.project_requirements(),
                                                  bundle.ALWAYS_EXCLUDED | have)
    assert not names(resolvable) & have


@pytest.mark.parametrize("args, fragment", [
    (["x.tar.gz", "--python", "3"], "give the version as X.Y"),
    (["x.zip"], "must end in .tar.gz"),
    (["no/such/folder/x.tar.gz"], "no such folder"),
    (["x.tar.gz", "--have", "missing.txt"], "pip freeze > have.txt"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, fragment):
    args = [str(tmp_path / a) if a.startswith(("x.", "no/", "missing")) else a for a in args]
    result = run_cli("scripts/offline_bundle.py", *args)
    assert_usage_error(result, fragment)
    assert list(Path(tmp_path).iterdir()) == []
