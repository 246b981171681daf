"""A distilled student out of the platform: study/export.py on a finished sweep writes each
chosen student as a state dict, TorchScript and ONNX with its cards, and onnxruntime gives
PyTorch's outputs on the test images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_usage_error, run_cli, tree

from analysis.images import test_images as load_test_images
from analysis.run import load_run
from analysis.selection import chosen_trials
from sdkd_core.models import build_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = run_cli("study/export.py", str(tiny_run.run), "--out", str(out), "--images", "64")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_every_chosen_student_leaves_in_three_formats_with_its_cards(tiny_run, exported):
    out, result = exported
    run = load_run(tiny_run.run)
    expected = set()
    for teacher, student in run.pairs():
        for method in set(run.completed["method"]):
            for _, row in chosen_trials(run, method, teacher, student).iterrows():
                expected.add((method, f"{teacher}-{student}-s{row['seed']}", row["trial_id"]))
    cards = {p.parent: json.loads(p.read_text()) for p in out.glob("*/*/card.json")}
    found = {(f.parent.name, f.name, c["run"]["trial_id"]) for f, c in cards.items()}
    assert found == expected and len(found) >= 8  # 4 methods, 2 seeds each
    results = pd.read_csv(tiny_run.run / "results.csv").set_index("trial_id")
    for folder, card in cards.items():
        for name in ("student.pt", "student.torchscript.pt", "student.onnx", "card.md"):
            assert (folder / name).stat().st_size > 0, folder / name
        row = results.loc[card["run"]["trial_id"]]
        assert card["scores"]["top-1"] == {"last": row["test_acc"], "best": row["test_acc_best"]}
        assert card["dataset"]["preprocessing"]["mean"] == [0.5]
        assert card["checks"]["onnx_max_diff"] <= 1e-4 and card["cost"]["latency_ms"] > 0
        net = build_model(card["student"]["arch"], 10, 1)
        assert card["cost"]["params"] == sum(p.numel() for p in net.parameters())
        assert card["method"]["name"] in (folder / "card.md").read_text()
    assert result.stdout.count("card.json") == len(cards)


def test_onnxruntime_and_torchscript_give_the_students_outputs(tiny_run, exported):
    """Checked here independently of the card: the state dict in a fresh model, the
    TorchScript file and the ONNX file, on the run's test images."""
    import onnxruntime

    out, _ = exported
    _, images, _ = load_test_images(load_run(tiny_run.run), 64)
    folder = next(p.parent for p in sorted(out.glob("sdkd/*/card.json")))
    card = json.loads((folder / "card.json").read_text())
    net = build_model(card["student"]["arch"], 10, 1)
    net.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
    with torch.no_grad():
        ours = net.eval()(images).logits.numpy()
        scripted = torch.jit.load(folder / "student.torchscript.pt")(images).numpy()
    session = onnxruntime.InferenceSession(str(folder / "student.onnx"),
                                           providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"images": images.numpy()})[0]
    assert onnx_out.shape == ours.shape == (64, 10)
    assert np.abs(onnx_out - ours).max() < 1e-4 and np.abs(scripted - ours).max() < 1e-5
    assert (ours.argmax(1) == onnx_out.argmax(1)).all()


def test_bad_run_folders_and_unknown_trials_are_one_line(tiny_run, tmp_path):
    before = tree(tiny_run.run)
    result = run_cli("study/export.py", str(tmp_path), fresh=True)  # as a user types it
    assert_usage_error(result, "is not a run folder")
    result = run_cli("study/export.py", str(tiny_run.run), "--trial", "kd-nope",
                     "--out", str(tmp_path / "out"))
    assert_usage_error(result, "--trial kd-nope: no such trial")
    result = run_cli("study/export.py", str(tiny_run.run), "--images", "1")
    assert_usage_error(result, "--images 1")
    assert not (tmp_path / "out").exists() and tree(tiny_run.run) == before
