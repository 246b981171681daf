"""Published teachers through the whole path: a checkpoint named in a space file (or given to
distill.py) is the teacher of every trial, weight for weight, its accuracy measured once and
cached; the space shows it in --dry-run; one that does not fit is one line, exit 2."""

from __future__ import annotations

import torch
from conftest import assert_usage_error, run_cli, tree
from torch import nn

from sdkd_core.models import build_model
from sdkd_core.recipe import Recipe
from study.distill import prepare
from study.runfolder.trials import PlannedTrial
from study.sections import DatasetSection
from study.teachers import TeacherCache, TeacherSpec


def random_teacher(arch: str, classes: int = 10, channels: int = 1) -> nn.Module:
    """A teacher no training produced: random weights and BatchNorm statistics."""
    torch.manual_seed(3)
    net = build_model(arch, classes, channels)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def assert_same_teacher(got: nn.Module, published: nn.Module) -> None:
    """The same weights and statistics, bit for bit, and so the same logits (up to the float
    rounding of the engine's memory layout)."""
    mine, theirs = got.state_dict(), published.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].cpu(), theirs[k]) for k in mine)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(got(x).logits, published(x).logits, rtol=0, atol=1e-5)


def teacher_of(path, cache: TeacherCache, logs: list[str]) -> nn.Module:
    data = DatasetSection(name="synthetic", n_train=256, n_test=128)
    teacher = TeacherSpec(data, "resnet14", checkpoint=str(path))
    return prepare(PlannedTrial("kd", "resnet14", "resnet8"), data,
                   Recipe(epochs=1, batch_size=32), teacher, cache, device="cpu",
                   log=logs.append).method.teacher


def test_a_checkpoint_is_the_teacher_exactly_and_measured_once(tmp_path):
    published = random_teacher("resnet14")
    path = tmp_path / "resnet14.pth"
    torch.save({"model": published.state_dict()}, path)  # the 'model' wrapper, our key names
    cache, logs = TeacherCache(tmp_path / "cache"), []
    assert_same_teacher(teacher_of(path, cache, logs), published)
    assert any("measured now" in line for line in logs), logs
    logs.clear()
    assert_same_teacher(teacher_of(path, cache, logs), published)
    assert any("(cached)" in line for line in logs), logs
    cards = list((tmp_path / "cache" / "teachers").glob("*.json"))
    assert len(cards) == 1 and str(path) in cards[0].read_text()

    # Another file (other weights, this project's plain format) is another teacher.
    other = random_teacher("resnet14")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.1)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    assert_same_teacher(teacher_of(tmp_path / "other.pth", cache, []), other)
    assert len(list((tmp_path / "cache" / "teachers").glob("*.json"))) == 2


SPACE = """\
name: published
dataset: {{name: synthetic, n_train: 256, n_test: 128}}
recipe: {{epochs: 1, batch_size: 32}}
teacher: {{checkpoints: {{resnet14: {path}}}}}
pairs:
  - {{teacher: resnet14, student: resnet8}}
baselines: [kd]
"""


def test_a_space_names_published_teachers_relative_to_its_own_folder(tmp_path):
    torch.save(random_teacher("resnet14").state_dict(), tmp_path / "resnet14.pth")
    (tmp_path / "spaces").mkdir()
    space = tmp_path / "spaces" / "published.yaml"
    space.write_text(SPACE.format(path="../resnet14.pth"))
    result = run_cli("study/sweep.py", "--space", str(space), "--dry-run",
                     "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert f"teacher resnet14: published checkpoint {tmp_path / 'resnet14.pth'} (to measure" \
        in result.stdout, result.stdout


def test_a_checkpoint_of_another_architecture_is_one_line(tmp_path):
    """resnet20's weights given for resnet14 (the space) or to distill.py: exit 2, one line,
    nothing written."""
    torch.save(random_teacher("resnet20").state_dict(), tmp_path / "resnet20.pth")
    space = tmp_path / "wrong.yaml"
    space.write_text(SPACE.format(path="resnet20.pth"))
    before = tree(tmp_path)
    result = run_cli("study/sweep.py", "--space", str(space), "--output", str(tmp_path / "run"),
                     "--cache-dir", str(tmp_path / "cache"))
    assert_usage_error(result, "teacher.checkpoints.resnet14:")
    assert "resnet20.pth" in result.stderr
    result = run_cli("study/distill.py", "--teacher", "resnet14", "--teacher-checkpoint",
                     str(tmp_path / "resnet20.pth"), "--dataset", "synthetic",
                     "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert_usage_error(result, "--teacher-checkpoint: ")
    assert tree(tmp_path) == before
