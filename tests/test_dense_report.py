"""The report of a dense run: tables in the task's metric and direction, Grad-CAM++ of one
class's mask, claims on mIoU; and the selection rule in a metric where smaller is better."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import finished_sweep

from analysis.convergence import late_gain
from analysis.selection import selection_metric, tuned_config
from sdkd_core.tasks import IGNORE, TASKS

pytestmark = pytest.mark.slow

# A real small segmentation study: Fashion-MNIST scenes at 32 pixels, SDKD tuned (two draws,
# ASHA, no confirming runs) against KD and vanilla on two seeds, and the sweep's own report.
DENSE_RUN = """\
name: dense_tiny
dataset: {name: fashion_scenes, image_size: 32, n_train: 192, n_test: 64, val_split: 64}
recipe: {epochs: 2, batch_size: 16, lr: 0.2, schedule: poly}
teacher: {epochs: 2, n_train: 192, recipe: {batch_size: 16, lr: 0.2, schedule: poly}}
pairs:
  - {teacher: deeplabv3_resnet14, student: deeplabv3_resnet8,
     settings: {kd.ce_weight: 1.0, sdkd.temperature: 1.0}}
baselines: [vanilla, kd]
seeds: [0, 1]
search:
  methods: [sdkd]
  num_samples: 2
  grace_period: 1
  confirm_top: 0  # no second experiment: the tables' cells stand on the baselines' two seeds
space:
  sdkd.lambda: {type: loguniform, low: 0.1, high: 10}
resources: {max_concurrent: 2}
"""


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    return finished_sweep(tmp_path_factory.mktemp("dense-run"), DENSE_RUN).run


def test_the_sweep_reports_a_segmentation_run_in_miou(dense_run):
    results = pd.read_csv(dense_run / "results.csv")
    assert {"test_miou", "test_miou_best", "val_miou", "test_pixel_acc"} <= set(results.columns)
    tables = dense_run / "report" / "tables"
    last = (tables / "comparison_last.md").read_text()
    assert "test mIoU (%), last epoch" in last.splitlines()[0]
    assert "validation mIoU" in last.splitlines()[0]
    assert (tables / "comparison_pixel_acc.md").is_file()
    # A cell is the mean ± std over seeds of results.csv's test mIoU.
    long = pd.read_csv(tables / "comparison_last.csv").set_index("column")
    for method, column in (("vanilla", "vanilla"), ("kd", "KD")):
        values = results[(results["method"] == method) & (results["role"] == "baseline")]
        assert long.loc[column, "mean"] == pytest.approx(values["test_miou"].mean())
        assert long.loc[column, "n"] == 2
        assert f"{values['test_miou'].mean():.2f} ± {values['test_miou'].std():.2f}" in last
    students = long.drop(index="teacher", errors="ignore")
    assert students["best"].sum() == 1 and \
        students.loc[students["best"], "mean"].item() == students["mean"].max()
    page = (dense_run / "report" / "index.html").read_text()
    assert "mIoU" in page and "SemanticSegmentationTarget" in page
    assert "report reads classification runs only" not in page
    claims = pd.read_csv(dense_run / "report" / "claims.csv")
    assert len(claims) and claims["verdict"].notna().all()


def test_gradcam_explains_one_class_mask_as_the_package_does(dense_run):
    """The report's teacher maps equal pytorch-grad-cam's own SemanticSegmentationTarget on
    the class the task explains."""
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from analysis.gradcam import Logits, test_images
    from analysis.run import load_run
    from sdkd_core.distillers.base import cam_layer

    gradcam = dense_run / "report" / "gradcam"
    sim = pd.read_csv(gradcam / "similarity.csv")
    assert set(sim["a"]) >= {"teacher", "SDKD student", "KD student", "vanilla student"}
    diagonal = sim[sim["a"] == sim["b"]]
    assert np.allclose(diagonal["pearson_mean"], 1.0) and np.allclose(diagonal["cka"], 1.0)
    assert (gradcam / "overlays.png").stat().st_size > 0

    run = load_run(dense_run)
    maps = np.load(gradcam / "maps.npz")
    _, images, labels = test_images(run, len(maps["labels"]))
    assert np.array_equal(maps["labels"], labels.numpy())
    teacher = run.teacher_network("deeplabv3_resnet14").requires_grad_(True)
    task = TASKS["segmentation"]
    targets = []
    for label in labels:
        c = task.explained_class(label)
        counts = np.bincount(label[label != IGNORE].numpy().ravel(), minlength=11)
        assert c == (int(np.argmax(counts[1:])) + 1 if counts[1:].any() else 0)
        targets.append(SemanticSegmentationTarget(c, (label == c).float().numpy()))
    with GradCAMPlusPlus(model=Logits(teacher), target_layers=[cam_layer(teacher)]) as cam:
        theirs = np.concatenate([cam(input_tensor=images[i:i + 32], targets=targets[i:i + 32])
                                 for i in range(0, len(images), 32)])
    assert np.allclose(maps["teacher"], theirs, atol=1e-5)


def test_selection_and_convergence_follow_a_metric_where_smaller_is_better():
    depth = TASKS["depth"]
    search = pd.DataFrame({
        "sdkd.lambda": [1.0, 1.0, 2.0, 2.0],
        "val_rmse": [0.50, 0.54, 0.61, 0.63],
        "test_rmse": [0.70, 0.71, 0.40, 0.41],  # the test set must not choose
        "role": ["drawn"] * 4,
    })
    assert selection_metric(search, "test_rmse", depth) == "val_rmse"
    assert selection_metric(search, "test_absrel", depth) == "val_rmse"
    chosen = tuned_config(search, "test_rmse", ["sdkd.lambda"], depth)
    assert chosen["sdkd.lambda"].tolist() == [1.0, 1.0]
    assert tuned_config(search.iloc[[1, 2]], "test_rmse", [], depth)["val_rmse"].item() == 0.54
    # A falling RMSE is a gain.
    epochs = pd.DataFrame({"trial_id": ["a"] * 4, "epoch": [1, 2, 3, 4],
                           "val_rmse": [1.0, 0.8, 0.7, 0.62]})
    assert late_gain(epochs, "a", depth) == pytest.approx(0.8 - 0.62)
    assert depth.sign() == -1 and depth.sign("delta1") == 1 and TASKS["segmentation"].sign() == 1


def test_each_task_explains_a_scalar_grad_cam_can_follow():
    seg, depth, cls = TASKS["segmentation"], TASKS["depth"], TASKS["classification"]
    output = torch.randn(3, 4, 4)
    label = torch.tensor([[0, 0, 2, 2], [0, 1, 2, 2], [IGNORE, 1, 0, 0], [0, 0, 0, 0]])
    assert seg.explained_class(label) == 2  # the largest labelled class besides class 0
    assert seg.explained(output, label).item() == pytest.approx(
        float(output[2][label == 2].sum()))
    background = torch.zeros(4, 4, dtype=torch.long)
    assert seg.explained_class(background) == 0
    true_depth = torch.tensor([[0.0, 2.0], [4.0, 0.0]])
    predicted = torch.tensor([[[9.0, 1.0], [3.0, 9.0]]])
    assert depth.explained(predicted, true_depth).item() == pytest.approx(2.0)
    assert depth.explained_class(true_depth) is None
    logits = torch.tensor([0.1, 0.7, -1.0])
    assert cls.explained(logits, torch.tensor(1)).item() == pytest.approx(0.7)
    assert math.isclose(cls.min_gain, 0.5) and depth.min_gain < cls.min_gain
