"""The analysis: tables, similarity, Grad-CAM++, CKA and the HTML report, on a real small run."""

from __future__ import annotations

import csv
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_quick_usage_error, assert_usage_error, run_cli, run_mains, tree

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- fast: exact invariants


def test_linear_cka_of_features_with_themselves_is_one_and_invariant():
    from analysis.gradcam import linear_cka

    x = np.random.default_rng(0).normal(size=(50, 16))
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 16)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-12)  # rotation and scale
    y = np.random.default_rng(2).normal(size=(50, 8))
    assert 0.0 <= linear_cka(x, y) < 0.5 and linear_cka(x, y) == pytest.approx(linear_cka(y, x))


def test_proxy_teacher_network_reproduces_the_sdkd_proxy(synthetic):
    from sdkd_core.distillers import build_distiller
    from sdkd_core.distillers.sdkd import ProxyTeacher
    from sdkd_core.models import build_model

    torch.manual_seed(0)
    for values in ({}, {"sdkd.ffb_depth": 2, "sdkd.fuse_stage": 1},
                   {"sdkd.proxy_arch": "teacher"}, {"sdkd.use_teacher_feats": False}):
        method = build_distiller("sdkd", build_model("resnet8", 10, 1),
                                 build_model("resnet14", 10, 1), values).eval()
        x = (synthetic.test_x[:16].float() - 128) / 64
        proxy = ProxyTeacher(method)
        with torch.no_grad():
            expected = method.eval_logits(x)["proxy"]
            assert torch.equal(proxy(x).logits, expected), values
        # A copy: hooks on its layers never see the student's own pass.
        assert proxy.cam_layer is not method.student.stages[-1]
        assert torch.equal(method.extra_network("proxy")(x).logits, expected)


def test_map_similarity_is_pearson_and_cosine():
    from analysis.gradcam import map_similarity

    rng = np.random.default_rng(0)
    a, b = rng.random((5, 7, 7)), rng.random((5, 7, 7))
    pearson, cosine = map_similarity(a, b)
    for i in range(5):
        assert pearson[i] == pytest.approx(np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1])
        ai, bi = a[i].ravel(), b[i].ravel()
        assert cosine[i] == pytest.approx(ai @ bi / np.linalg.norm(ai) / np.linalg.norm(bi))
    pearson, _ = map_similarity(np.zeros((1, 7, 7)), a[:1])  # a constant map: undefined
    assert np.isnan(pearson[0])


NOT_A_RUN_FOLDER = [
    ("analysis.report", ".", "is not a run folder (no study.json)"),
    ("analysis.report", "absent", "no such folder"),
    ("analysis.tables", ".", "is not a run folder"),
    ("analysis.plots", ".", "is not a run folder"),
    ("analysis.gradcam", ".", "is not a run folder"),
]


def test_a_folder_that_is_not_a_run_folder_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    results = run_mains([(module, [str(tmp_path / folder)])
                         for module, folder, _ in NOT_A_RUN_FOLDER])
    for result, (_, _, fragment) in zip(results, NOT_A_RUN_FOLDER, strict=True):
        assert_usage_error(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written
    # And once as a user types it.
    assert_usage_error(run_cli("-m", "analysis.report", str(tmp_path), fresh=True),
                       "is not a run folder")


# (module, flags, fragment): each flag is checked before the run folder is read, so the line is
# the flag's although the folder given does not exist. `{file}` is an existing file.
BAD_FLAGS = [
    ("analysis.report", ["--images", "0"], "--images 0: give at least 2 test images"),
    ("analysis.report", ["--images", "-3"], "--images -3"),
    ("analysis.report", ["--images", "nan"], "invalid int value: 'nan'"),
    ("analysis.gradcam", ["--images", "1"], "--images 1: give at least 2"),
    ("analysis.gradcam", ["--show", "0"], "--show 0: give 1 to --images (64) grid rows"),
    ("analysis.gradcam", ["--show", "65"], "--show 65"),
    ("analysis.gradcam", ["--images", "4", "--show", "5"], "--show 5: give 1 to --images (4)"),
    ("analysis.gradcam", ["--out", "{file}"], "--out {file}: {file} is a file, not a folder"),
    ("analysis.tables", ["--out", "{file}"], "is a file, not a folder; pass a folder path"),
    ("analysis.plots", ["--out", "{file}/plots"], "--out {file}/plots: {file} is a file"),
]


def test_bad_flags_are_one_line_before_the_run_folder_is_read(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    before = tree(tmp_path)
    calls = [(module, [str(tmp_path / "absent"), *(a.replace("{file}", str(a_file)) for a in args)])
             for module, args, _ in BAD_FLAGS]
    for result, (*_, fragment) in zip(run_mains(calls), BAD_FLAGS, strict=True):
        assert_quick_usage_error(result, fragment.replace("{file}", str(a_file)))
    assert tree(tmp_path) == before  # nothing written


# ---------------------------------------------------------------- slow: on a real sweep


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("study.json", "results.csv", "epochs.csv"):
        shutil.copy(src / name, dst / name)
    return dst


@pytest.mark.slow
def test_bad_run_folders_are_one_line_and_write_nothing(tiny_run, tmp_path):
    broken = copy_run(tiny_run.run, tmp_path / "missing-columns")
    frame = pd.read_csv(broken / "results.csv").drop(columns=["test_acc", "status"])
    frame.to_csv(broken / "results.csv", index=False)
    unfinished = copy_run(tiny_run.run, tmp_path / "unfinished")
    frame = pd.read_csv(unfinished / "results.csv").assign(status="running")
    frame.to_csv(unfinished / "results.csv", index=False)
    missing, running, images = run_mains([
        ("analysis.report", [str(broken)]), ("analysis.report", [str(unfinished)]),
        ("analysis.report", [str(tiny_run.run), "--images", "1"])])
    assert_usage_error(missing, "lacks column(s) test_acc, status")
    assert_usage_error(running, "has no finished trials yet (trials: running 12)")
    assert not (broken / "report").exists() and not (unfinished / "report").exists()
    assert_usage_error(images, "--images 1")


@pytest.mark.slow
def test_table_cells_are_the_mean_and_std_over_seeds_of_results_csv(tiny_run):
    results = [r for r in read_csv(tiny_run.run / "results.csv") if r["status"] == "completed"]
    labels = {"vanilla": "vanilla", "kd": "KD", "shake": "SHAKE", "sdkd": "SDKD (defaults)"}
    fixed = {m: [r for r in results if r["role"] == "baseline" and r["method"] == m]
             for m in labels}
    for metric, stem in (("test_acc", "last"), ("test_acc_best", "best")):
        table = read_csv(tiny_run.run / "report" / "tables" / f"comparison_{stem}.csv")
        cells = {r["column"]: r for r in table}
        # The space lists baselines vanilla, kd, shake, sdkd: the Δ row is against vanilla.
        vanilla = statistics.mean(float(r[metric]) for r in fixed["vanilla"])
        for method, label in labels.items():
            values = [float(r[metric]) for r in fixed[method]]
            assert len(values) == 2
            assert float(cells[label]["mean"]) == pytest.approx(statistics.mean(values))
            assert float(cells[label]["std"]) == pytest.approx(statistics.stdev(values))
            assert int(cells[label]["n"]) == 2
            assert cells[label]["reference"] == "vanilla"
            assert float(cells[label]["delta"]) == pytest.approx(statistics.mean(values) - vanilla)
        # Tuned: the confirmed configuration, over its drawn trial and its repeat.
        (confirm,) = [r for r in results if r["role"] == "confirming"]
        tuned = [float(r[metric]) for r in results
                 if r["trial_id"] in (confirm["trial_id"], confirm["trial_id"][:-3])]
        assert len(tuned) == 2 and int(cells["SDKD (tuned)"]["n"]) == 2
        assert float(cells["SDKD (tuned)"]["mean"]) == pytest.approx(statistics.mean(tuned))
        assert [c for c in cells if cells[c]["versus"]] == ["SDKD (defaults)", "SDKD (tuned)"]
        students = [c for c in cells if c != "teacher"]
        best = max(students, key=lambda c: float(cells[c]["mean"]))
        assert [c for c in students if cells[c]["best"] == "True"] == [best]
        md = (tiny_run.run / "report" / "tables" / f"comparison_{stem}.md").read_text()
        mean, std = float(cells[best]["mean"]), float(cells[best]["std"])
        assert f"**{mean:.2f} ± {std:.2f}**" in md
        assert "| Δ vs vanilla " in md and "SDKD vs the strongest other baseline" in md
        tex = (tiny_run.run / "report" / "tables" / f"comparison_{stem}.tex").read_text()
        assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{" in tex


@pytest.mark.slow
def test_similarity_matrices_are_symmetric_with_unit_diagonal(tiny_run):
    sim = pd.read_csv(tiny_run.run / "report" / "gradcam" / "similarity.csv")
    names = list(dict.fromkeys(sim["a"]))
    assert names[:3] == ["teacher", "SDKD proxy teacher", "SDKD student"]
    assert {"KD student", "SHAKE student", "vanilla student"} <= set(names)
    for column in ("pearson_mean", "cosine_mean", "cka"):
        m = sim.pivot(index="a", columns="b", values=column).loc[names, names].to_numpy()
        assert np.allclose(m, m.T, atol=1e-9), column
        assert np.allclose(np.diag(m), 1.0, atol=1e-9), column
        assert ((m >= -1) & (m <= 1 + 1e-12)).all(), column


@pytest.mark.slow
def test_gradcam_maps_equal_the_packages_own_output(tiny_run):
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from analysis.gradcam import Logits, cam_maps, load_networks, test_images
    from analysis.run import load_run
    from sdkd_core.distillers.base import cam_layer

    run = load_run(tiny_run.run)
    nets = load_networks(run)
    _, images, labels = test_images(run, 64)
    saved = np.load(tiny_run.run / "report" / "gradcam" / "maps.npz")
    assert (saved["labels"] == labels.numpy()).all()
    for name in ("teacher", "SDKD proxy teacher", "KD student"):
        model = nets.models[name]
        ours = cam_maps(model, images, labels)
        layer = cam_layer(model)
        with GradCAMPlusPlus(model=Logits(model), target_layers=[layer]) as cam:
            theirs = cam(input_tensor=images,
                         targets=[ClassifierOutputTarget(int(y)) for y in labels])
        assert ours.shape == (64, 28, 28)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        np.testing.assert_allclose(saved[name.replace(" ", "_")], theirs, atol=1e-5)
        assert ours.std() > 0  # not a blank map


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tiny_run):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium is missing: run `make browser` (Debian packages chromium and "
                    "chromium-driver)")
    index = tiny_run.run / "report" / "index.html"
    page = index.read_text()
    for fragment in ("comparison_last.md", "SDKD (tuned)", "tiny: SDKD study report",
                     "SDKD proxy teacher", "ablation_sdkd_lambda.png",
                     "ablation_sdkd_ffb_depth.png", "optuna_importance.png",
                     "learning_curves.png", "overlays.png", "similarity.png",
                     "Cost beside accuracy", "accuracy_vs_cost.png", "cost.csv"):
        assert fragment in page, fragment
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,2000",
                 f"--user-data-dir={tiny_run.run / '.chromium'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(index.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete,"
            " i.naturalWidth]);")
        assert len(images) >= 7, images
        broken = [src for src, complete, width in images if not (complete and width > 0)]
        assert not broken, broken
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        # The claims section is laid out: one row per claim, each with a verdict and numbers.
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#claims + table tbody tr'))"
            ".map(r => [r.cells.length, r.cells[1].innerText, r.cells[2].innerText,"
            " r.getBoundingClientRect().height]);")
        assert len(rows) == 4, rows
        for cells, verdict, numbers, height in rows:
            assert cells == 3 and height > 0, rows
            assert verdict in ("supported", "not supported", "not tested here"), rows
            assert numbers.strip() and "Rule:" in numbers, rows
        # Cost beside accuracy: one row per network of the pair, with parameters and MACs.
        cost = driver.execute_script(
            "return Array.from(document.querySelectorAll('#cost ~ table')[0].tBodies[0].rows)"
            ".map(r => Array.from(r.cells).map(c => c.innerText));")
        assert [r[0] for r in cost] == ["resnet14", "resnet8"], cost
        assert all(r[2].endswith(" M") and r[3].endswith(" M") for r in cost), cost
        # ... and in the comparison table itself: a cost row under the pair, every column.
        costs = driver.execute_script(
            "const t = document.querySelectorAll('#tables ~ table')[0];"
            "return Array.from(t.tBodies[0].rows).filter(r => r.cells[0].innerText == 'cost')"
            ".map(r => Array.from(r.cells).slice(1).map(c => c.innerText));")
        assert len(costs) == 1 and len(costs[0]) == 6, costs  # the teacher and five students
        assert all("M params" in c and "M MACs" in c and c.endswith(" ms") for c in costs[0])
        assert len(set(costs[0][1:])) == 1 and costs[0][0] != costs[0][1], costs
        shot = tiny_run.run / "report" / "screenshot.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
        shutil.rmtree(tiny_run.run / ".chromium", ignore_errors=True)
