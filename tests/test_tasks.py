"""Each task's loss, distillation term and metrics against an independent computation (numpy,
written from the formulas), the joint augmentation, the Fashion-MNIST scenes, and the methods
a task refuses."""

import numpy as np
import pytest
import torch

from sdkd_core.augment import joint_augment
from sdkd_core.datasets import DATASET_INFO
from sdkd_core.distillers import build_distiller
from sdkd_core.distillers.cwd import cwd_loss
from sdkd_core.errors import UserError
from sdkd_core.models import build_model
from sdkd_core.tasks import IGNORE, get_task


def log_softmax(a, axis):
    a = a - a.max(axis=axis, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=axis, keepdims=True))


@pytest.fixture(scope="module")
def seg_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 6, 7, generator=g) * 3
    target = torch.randint(0, 5, (3, 6, 7), generator=g)
    target[0, :2] = IGNORE
    target[2, 3, 4] = IGNORE
    target[target == 4] = 3  # class 4 never labelled: scored only where predicted
    return logits, target


def test_segmentation_metrics_equal_a_separate_confusion_matrix(seg_batch):
    logits, target = seg_batch
    task = get_task("segmentation")
    sums = task.metric_sums(logits[:2], target[:2]) + task.metric_sums(logits[2:], target[2:])
    values = task.metric_values(sums)
    pred, t = logits.argmax(1).numpy().ravel(), target.numpy().ravel()
    keep = t != IGNORE
    cm = np.zeros((5, 5))
    for a, b in zip(t[keep], pred[keep], strict=True):
        cm[a, b] += 1
    ious = [cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c]) for c in range(5)
            if cm[c].sum() + cm[:, c].sum() > 0]
    assert values["miou"] == pytest.approx(100 * np.mean(ious), abs=1e-9)
    assert values["pixel_acc"] == pytest.approx(100 * np.trace(cm) / cm.sum(), abs=1e-9)
    z = logits.permute(0, 2, 3, 1).reshape(-1, 5).numpy().astype(np.float64)
    nll = -log_softmax(z, 1)[np.arange(len(t)), np.where(keep, t, 0)]
    assert values["loss"] == pytest.approx(nll[keep].mean(), rel=1e-6)
    assert float(task.supervised_loss(logits, target)) == pytest.approx(nll[keep].mean(),
                                                                         rel=1e-5)


def test_segmentation_distillation_is_pixelwise_kl_over_classes(seg_batch):
    logits, _ = seg_batch
    teacher = torch.randn_like(logits)
    t = 4.0
    s = logits.permute(0, 2, 3, 1).reshape(-1, 5).double().numpy() / t
    q = teacher.permute(0, 2, 3, 1).reshape(-1, 5).double().numpy() / t
    lq, ls = log_softmax(q, 1), log_softmax(s, 1)
    expected = (np.exp(lq) * (lq - ls)).sum(1).mean() * t * t
    got = get_task("segmentation").distill_loss(logits, teacher, t)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_depth_metrics_equal_their_formulas_per_image():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(4, 5, 6, generator=g) * 9 + 1
    target[0, 0] = 0  # no depth there
    target[3] = 0  # an image without a valid pixel is not scored
    pred = target + torch.randn(4, 5, 6, generator=g)
    pred[1, 0, 0] = -2.0  # a negative prediction is clamped for the ratios
    task = get_task("depth")
    values = task.metric_values(task.metric_sums(pred[:, None], target))
    rows = {"rmse": [], "absrel": [], "delta1": [], "delta2": [], "delta3": []}
    for p, t in zip(pred.double().numpy(), target.double().numpy(), strict=True):
        v = t > 0
        if not v.any():
            continue
        p, t = p[v], t[v]
        rows["rmse"].append(np.sqrt(((p - t) ** 2).mean()))
        rows["absrel"].append((np.abs(p - t) / t).mean())
        pc = np.maximum(p, 1e-3)
        ratio = np.maximum(pc / t, t / pc)
        for k in (1, 2, 3):
            rows[f"delta{k}"].append((ratio < 1.25 ** k).mean())
    for key, per_image in rows.items():
        assert len(per_image) == 3
        assert values[key] == pytest.approx(np.mean(per_image), rel=1e-9), key
    valid = target > 0
    l1 = (pred - target).abs()[valid].double().mean()
    assert values["loss"] == pytest.approx(float(l1), rel=1e-9)
    assert float(task.supervised_loss(pred[:, None], target)) == pytest.approx(float(l1),
                                                                                rel=1e-5)
    teacher = torch.randn(4, 1, 5, 6)
    assert float(task.distill_loss(pred[:, None], teacher, 4.0)) == pytest.approx(
        float((pred - teacher[:, 0]).abs().mean()), rel=1e-6)


def test_cwd_is_channelwise_spatial_kl():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    temp = 4.0
    ls = log_softmax(s.double().numpy().reshape(2, 3, -1) / temp, 2)
    lt = log_softmax(t.double().numpy().reshape(2, 3, -1) / temp, 2)
    expected = (np.exp(lt) * (lt - ls)).sum() * temp ** 2 / (2 * 3)
    assert float(cwd_loss(s, t, temp)) == pytest.approx(expected, rel=1e-5)


def test_classification_metrics_are_top1_top5_and_cross_entropy():
    g = torch.Generator().manual_seed(4)
    logits, target = torch.randn(50, 8, generator=g), torch.randint(0, 8, (50,), generator=g)
    values = get_task("classification").metric_values(
        get_task("classification").metric_sums(logits, target))
    order = np.argsort(-logits.numpy(), 1)
    assert values["acc"] == pytest.approx(100 * (order[:, 0] == target.numpy()).mean())
    assert values["top5"] == pytest.approx(
        100 * np.mean([t in row[:5] for t, row in zip(target.numpy(), order, strict=True)]))


def test_joint_augmentation_moves_image_and_labels_together():
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (6, 1, 16, 16), generator=g, dtype=torch.uint8)
    labels = (x[:, 0] // 64).to(torch.uint8)  # a label map that is a function of the image
    same_x, same_y = joint_augment(x, labels, (1.0, 1.0), False, g, fill=IGNORE)
    assert torch.allclose(same_x, x.float(), atol=1e-3) and torch.equal(same_y, labels)
    flip_x, flip_y = joint_augment(x, labels, (1.0, 1.0), True, torch.Generator().manual_seed(0),
                                   fill=IGNORE)
    for i in range(6):  # each image flipped or not, its labels with it
        flipped = torch.allclose(flip_x[i], x[i].float().flip(-1), atol=1e-3)
        assert flipped or torch.allclose(flip_x[i], x[i].float(), atol=1e-3)
        assert torch.equal(flip_y[i], labels[i].flip(-1) if flipped else labels[i])
    big_x, big_y = joint_augment(x, labels, (0.5, 2.0), True, g, fill=IGNORE)
    assert big_y.dtype == labels.dtype and set(big_y.unique().tolist()) <= {0, 1, 2, 3, IGNORE}
    zoomed_out = (big_y == IGNORE)
    assert zoomed_out.any()  # some images shrank: what lies outside them is ignored
    # ... and the image is background there (bilinear blends the rim with it)
    assert (big_x[:, 0][zoomed_out] == 0).float().mean() > 0.5


def test_scenes_are_deterministic_and_occlude_consistently():
    from sdkd_core.data import load_dataset

    seg = load_dataset("fashion_scenes", n_train=200, n_test=50)
    again = load_dataset("fashion_scenes", n_train=200, n_test=50)
    depth = load_dataset("fashion_depth", n_train=200, n_test=50)
    assert torch.equal(seg.train_x, again.train_x) and torch.equal(seg.train_y, again.train_y)
    assert torch.equal(seg.train_x, depth.train_x)  # the same scenes, other labels
    assert seg.train_x.shape == (200, 1, 64, 64) and seg.train_y.shape == (200, 64, 64)
    ids = set(seg.train_y.unique().tolist())
    assert ids <= set(range(11)) | {IGNORE} and {0, IGNORE} < ids
    background = seg.train_y == 0
    assert (seg.train_x[:, 0][background] <= 10).all()  # background: no item drawn there
    assert (depth.train_y[background] >= 6).all()  # ... and the wall behind
    items = (seg.train_y > 0) & (seg.train_y != IGNORE)
    assert (depth.train_y[items] <= 8).all() and (depth.train_y > 0).all()
    info = DATASET_INFO["fashion_scenes"]
    assert info.task == "segmentation" and DATASET_INFO["fashion_depth"].task == "depth"


@pytest.mark.parametrize("method, task, fragment", [
    ("dkd", "depth", "method 'dkd' cannot run on depth estimation"),
    ("shake", "segmentation", "method 'shake' cannot run on semantic segmentation"),
    ("crd", "depth", "method 'crd' cannot run on depth estimation"),
    ("cwd", "classification", "method 'cwd' cannot run on image classification"),
    ("cwd", "depth", "method 'cwd' cannot run on depth estimation"),
])
def test_a_method_that_makes_no_sense_for_a_task_is_one_line(method, task, fragment):
    s, t = build_model("resnet8", 10, 1), build_model("resnet14", 10, 1)
    with pytest.raises(UserError) as err:
        build_distiller(method, s, t, task=task)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_kd_logit_standardisation_needs_a_classifier():
    s, t = build_model("resnet8", 10, 1), build_model("resnet14", 10, 1)
    with pytest.raises(UserError, match="kd.logit_standardize"):
        build_distiller("kd", s, t, {"kd.logit_standardize": True}, task="segmentation")


DENSE_SPACE = """\
name: dense-check
dataset: {{name: {dataset}, n_train: 256, n_test: 64{extra}}}
pairs:
  - {{teacher: {teacher}, student: {student}}}
baselines: [{method}]
{search}
"""
DENSE_CASES = [
    ("fashion_depth", "depthnet_resnet14", "depthnet_resnet8", "dkd", "", "",
     "baselines: method 'dkd' cannot run on depth estimation"),
    ("fashion_scenes", "deeplabv3_resnet14", "deeplabv3_resnet8", "shake", "", "",
     "method 'shake' cannot run on semantic segmentation"),
    ("fashion_scenes", "resnet14", "deeplabv3_resnet8", "kd", "", "",
     "pairs[0].teacher: resnet14 does not fit fashion_scenes's task (semantic segmentation"),
    ("fashion_depth", "deeplabv3_resnet14", "depthnet_resnet8", "kd", "", "",
     "use a model such as depthnet_resnet14"),
    ("fashion_mnist", "resnet14", "deeplabv3_resnet8", "kd", "", "",
     "pairs[0].student: deeplabv3_resnet8 does not fit fashion_mnist's task"),
    ("fashion_scenes", "deeplabv3_resnet14", "deeplabv3_resnet8", "kd", ", val_split: 32",
     "search: {metric: val_acc}", "search.metric: val_acc is not a metric of semantic"),
]


def test_a_dense_space_that_does_not_fit_its_task_is_one_line(tmp_path):
    from conftest import assert_quick_usage_error, run_mains

    calls = []
    for i, (dataset, teacher, student, method, extra, search, _) in enumerate(DENSE_CASES):
        path = tmp_path / f"case{i}.yaml"
        path.write_text(DENSE_SPACE.format(dataset=dataset, teacher=teacher, student=student,
                                           method=method, extra=extra, search=search))
        calls.append(("study.sweep", ["--space", str(path), "--dry-run"]))
    for result, case in zip(run_mains(calls), DENSE_CASES, strict=True):
        assert_quick_usage_error(result, case[-1])


def test_the_dense_spaces_plan_without_their_data(tmp_path):
    from conftest import run_mains

    demo, cityscapes = run_mains([
        ("study.sweep", ["--space", "study/spaces/dense_demo.yaml", "--dry-run",
                         "--cache-dir", str(tmp_path)]),
        ("study.sweep", ["--space", "study/spaces/cityscapes.yaml", "--dry-run",
                         "--cache-dir", str(tmp_path)])])
    assert demo.returncode == 0, demo.stderr
    assert "sdkd     3 drawn" in demo.stdout and "cwd      3 drawn" in demo.stdout
    assert "poly 0.9" in demo.stdout and "CPU-core-hours" in demo.stdout
    assert cityscapes.returncode == 0, cityscapes.stderr
    assert "GPU-hours" in cityscapes.stdout and "deeplabv3_resnet101" in cityscapes.stdout
    assert not any(tmp_path.iterdir())  # a plan writes nothing


def test_scenes_at_a_lower_resolution_are_the_same_scenes_shrunk():
    from sdkd_core.data import load_dataset

    full = load_dataset("fashion_scenes", n_train=64, n_test=16)
    small = load_dataset("fashion_scenes", n_train=64, n_test=16, image_size=32)
    assert small.info.image_size == 32 and small.train_x.shape == (64, 1, 32, 32)
    # Maps by nearest neighbour: each small pixel's class is one of its 2x2 block's.
    blocks = full.train_y.unfold(1, 2, 2).unfold(2, 2, 2).reshape(64, 32, 32, 4)
    assert (blocks == small.train_y[..., None]).any(-1).all()
    # Images by area: each small pixel is its block's mean.
    means = full.train_x.float().unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2)).round()
    assert torch.equal(means.to(torch.uint8), small.train_x)
    with pytest.raises(UserError, match="image_size=30: this generated set is made at"):
        load_dataset("fashion_scenes", n_train=64, n_test=16, image_size=30)
