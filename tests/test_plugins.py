"""A researcher's own method, from a module outside the repository, goes through the sweep,
tables, plots, Grad-CAM and report exactly like a built-in one; a broken plugin is one line."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from conftest import SWEEP_TEACHERS, assert_usage_error, run_cli, run_mains, tree

# KD with its own label, one extra head (a linear layer on the student's detached logits) and a
# schedule mark: what a researcher would write, in about 30 lines.
ECHO_KD = '''
import copy

from pydantic import Field
from torch import nn
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers import Distiller, register
from sdkd_core.losses import kd_loss


class EchoConfig(MethodConfig):
    temperature: float = Field(4.0, gt=0)
    echo_weight: float = Field(1.0, ge=0)
    warmup: float = Field(1.0, ge=0)


class EchoNet(nn.Module):
    def __init__(self, method):
        super().__init__()
        self.student, self.echo = copy.deepcopy(method.student), copy.deepcopy(method.echo)
        self.cam_layer = self.student.stages[-1]

    def forward(self, x):
        return self.echo(self.student(x).logits)


@register
class EchoKD(Distiller):
    name, label, Config = "echokd", "EchoKD", EchoConfig
    heads = {"echo": "EchoKD echo head"}

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        self.echo = nn.Linear(student.num_classes, student.num_classes)

    @classmethod
    def schedule_marks(cls, config, epochs):
        return {"EchoKD warm-up end": config.warmup}

    def optim_groups(self):
        return {"student": [*self.student.parameters(), *self.echo.parameters()]}

    def extra_network(self, key):
        return EchoNet(self)

    def forward(self, x, y, epoch):
        z_s, z_t = self.student(x).logits, self.teacher_output(x).logits
        return z_s, {"ce": F.cross_entropy(z_s, y),
                     "kd": kd_loss(z_s, z_t, self.config.temperature),
                     "echo": self.config.echo_weight * F.cross_entropy(self.echo(z_s.detach()), y)}
'''

SPACE = """\
name: echo
plugins: [{module}]
dataset: {{name: synthetic, n_train: 512, n_test: 256, val_split: 100}}
recipe: {{epochs: 2, batch_size: 32}}
teacher: {{epochs: 2}}
pairs:
  - {{teacher: resnet14, student: resnet8{pair_protocol}}}
baselines: [vanilla, {methods}]
seeds: [0, 1]
search: {{methods: [{methods}], sampler: grid, grace_period: 1, reduction_factor: 2,
          confirm_top: 0}}
space:
{space}resources: {{max_concurrent: 2}}
"""


def write_space(path: Path, module: str, methods: list[str], pair_protocol: str = "") -> None:
    space = "".join(f"  {m}.temperature: {{type: choice, values: [2.0, 4.0]}}\n"
                    for m in methods)
    path.write_text(SPACE.format(module=module, methods=", ".join(methods), space=space,
                                 pair_protocol=pair_protocol))


BROKEN = {
    "echo_clash": ECHO_KD.replace('"echokd", "EchoKD"', '"kd", "EchoKD"'),
    "echo_nolabel": ECHO_KD.replace('"echokd", "EchoKD"', '"echokd", ""'),
    "echo_raises": "raise RuntimeError('no GPU driver here')\n",
    "echo_notdistiller": "from sdkd_core.distillers import register\n\n@register\nclass X:\n"
                         "    name = 'x'\n",
}
CASES = [
    ("echo_clash", "method name 'kd' of echo_clash.EchoKD is taken by"),
    ("echo_nolabel", "has no `label`"),
    ("echo_raises", "plugin 'echo_raises' failed to import: RuntimeError: no GPU driver here"),
    ("echo_notdistiller", "is not a subclass of sdkd_core.distillers.Distiller"),
    ("echo_absent", "plugin 'echo_absent' not found: put echo_absent.py in the working"),
]


def write_plugins(folder: Path) -> None:
    (folder / "echo_kd.py").write_text(ECHO_KD)
    for module, text in BROKEN.items():
        (folder / f"{module}.py").write_text(text)


def test_a_broken_plugin_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    write_plugins(plugins)
    calls = []
    for module, _ in CASES:
        space = tmp_path / f"{module}.yaml"
        write_space(space, module, ["kd"])
        calls.append(("study.sweep", ["--space", str(space), "--output", str(tmp_path / "run"),
                                      "--cache-dir", str(tmp_path / "cache"), "--dry-run"]))
        calls.append(("study.distill", ["--plugin", module, "--output", str(tmp_path / "d"),
                                        "--cache-dir", str(tmp_path / "cache")]))
    before = tree(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(plugins))
    results = run_mains(calls)
    for result, (_, fragment) in zip(results, [c for c in CASES for _ in range(2)],
                                     strict=True):
        assert_usage_error(result, fragment)
    assert tree(tmp_path) == before


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """One real small sweep started from the plugin's folder (outside the repository): the
    plugin method and a built-in one, DKD, each a baseline and a searched method, with the
    pair's own protocol (its learning rate and DKD's beta)."""
    base = tmp_path_factory.mktemp("echo")
    write_plugins(base)
    space = base / "echo.yaml"
    write_space(space, "echo_kd", ["echokd", "dkd"],
                ", recipe: {lr: 0.02}, settings: {dkd.beta: 3.5}")
    run = base / "run"
    result = run_cli(str(Path(__file__).resolve().parents[1] / "study" / "sweep.py"),
                     "--space", str(space), "--output", str(run),
                     "--cache-dir", str(SWEEP_TEACHERS), cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def report_texts(run: Path) -> list[Path]:
    texts = [p for p in (run / "report").rglob("*")
             if p.suffix in (".md", ".html", ".csv", ".tex", ".json", ".txt", ".svg")]
    assert texts
    return texts


def curve_legend(run: Path, plugin_dir: Path, monkeypatch) -> tuple[list[str], list[float]]:
    """The learning-curve figure's legend and its dotted schedule marks, drawn in-process."""
    from analysis import plots
    from analysis.run import load_run
    from sdkd_core import distillers

    monkeypatch.setattr(distillers, "METHODS", dict(distillers.METHODS))  # undone afterwards
    monkeypatch.syspath_prepend(str(plugin_dir))
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out, stem: figures.append(fig) or [])
    plots.learning_curves(load_run(run), plugin_dir / "curves")
    ax = figures[0].axes[0]
    marks = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
    # The convergence mark is checked in test_convergence; here the names and marks.
    return [t.get_text().removesuffix(" † still improving")
            for t in ax.get_legend().get_texts()], marks


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_plugin_method_is_a_baseline_and_the_searched_method(plugin_run):
    run, result = plugin_run
    rows = read_rows(run / "results.csv")
    assert {(r["method"], r["role"]) for r in rows} == {
        ("vanilla", "baseline"), ("echokd", "baseline"), ("echokd", "drawn"),
        ("dkd", "baseline"), ("dkd", "drawn")}
    assert all(r["status"] in ("completed", "stopped") for r in rows), rows
    assert all(float(r["test_acc_echo"]) >= 0 for r in rows if r["method"] == "echokd")
    assert "Best drawn EchoKD configurations" in result.stdout


@pytest.mark.slow
def test_the_report_shows_the_plugin_method_under_its_label_and_never_sdkd(plugin_run):
    run, _ = plugin_run
    report = run / "report"
    table = (report / "tables" / "comparison_last.md").read_text()
    assert "EchoKD (defaults)" in table and "EchoKD (tuned)" in table
    html = (report / "index.html").read_text()
    assert "EchoKD" in html
    assert "EchoKD echo head" in (report / "gradcam" / "similarity.csv").read_text()
    assert (report / "plots" / "learning_curves.png").stat().st_size > 0
    for path in report_texts(run):
        assert not re.search("sdkd", path.read_text(errors="replace"), re.IGNORECASE), path


@pytest.mark.slow
def test_the_learning_curves_show_the_plugins_head_and_schedule_mark(plugin_run, monkeypatch):
    run, _ = plugin_run
    labels, marks = curve_legend(run, run.parent, monkeypatch)
    assert "EchoKD (defaults) student (seed mean)" in labels
    assert "EchoKD echo head (same trial)" in labels
    assert "EchoKD warm-up end (after epoch 1)" in labels and marks == [1.5]


@pytest.mark.slow
def test_searching_dkd_labels_and_tests_dkd(plugin_run, monkeypatch):
    run, result = plugin_run
    assert "Best drawn DKD configurations" in result.stdout
    md = (run / "report" / "tables" / "comparison_last.md").read_text()
    assert "DKD (defaults)" in md and "DKD (tuned)" in md
    assert "EchoKD and DKD each vs the strongest other baseline" in md
    for path in report_texts(run):
        assert not re.search("sdkd", path.read_text(errors="replace"), re.IGNORECASE), path
    labels, _ = curve_legend(run, run.parent, monkeypatch)
    assert "DKD student (seed mean)" in labels  # EchoKD, the first tuned, is the subject


@pytest.mark.slow
def test_a_pairs_own_recipe_and_settings_reach_every_trial(plugin_run):
    """The pair's `recipe: {lr: 0.02}` trains each of its trials, whatever the method; its
    `settings: {dkd.beta: 3.5}` reaches every DKD trial (baseline and drawn) and only those."""
    import json

    from sdkd_core.recipe import Recipe

    run, _ = plugin_run
    configs = [json.loads(p.read_text()) for p in (run / "tune").glob("*/params.json")]
    assert {c["method"] for c in configs} == {"vanilla", "echokd", "dkd"} and len(configs) == 10
    for c in configs:
        assert c["recipe"] == {"lr": 0.02}
        assert c["params"].get("dkd.beta") == (3.5 if c["method"] == "dkd" else None), c
    rows = read_rows(run / "results.csv")
    assert {r["dkd.beta"] for r in rows if r["method"] == "dkd"} == {"3.5"}
    recipe, steps = Recipe(epochs=2, batch_size=32, lr=0.02), 512 // 32
    at_epoch_end = {round(0.02 * recipe.lr_factor(s, steps), 8) for s in (steps - 1, steps)}
    for r in read_rows(run / "epochs.csv"):
        if r["epoch"] == "1":
            assert round(float(r["lr"]), 8) in at_epoch_end, (r["lr"], at_epoch_end)


@pytest.mark.slow
def test_with_a_validation_split_the_search_sees_only_validation_accuracy(plugin_run):
    """Every trial reports val_acc in both tables; what Optuna stored for each drawn trial is
    its last validation accuracy, never its test accuracy."""
    import optuna

    run, _ = plugin_run
    results = read_rows(run / "results.csv")
    for path in (run / "results.csv", run / "epochs.csv"):
        assert all(r["val_acc"] not in ("", "nan") for r in read_rows(path)), path
    study = optuna.load_study(study_name="echo-dkd", storage=f"sqlite:///{run / 'optuna.db'}")
    drawn = {r["trial_id"]: r for r in results if r["role"] == "drawn" and r["method"] == "dkd"}
    values = sorted(t.value for t in study.trials if t.state.name == "COMPLETE")
    assert len(values) == len(drawn) == 2
    assert values == sorted(float(r["val_acc"]) for r in drawn.values())
    assert values != sorted(float(r["test_acc"]) for r in drawn.values())


@pytest.mark.slow
def test_a_plugin_methods_student_exports_like_a_built_in_one(plugin_run, tmp_path):
    import json

    run, _ = plugin_run
    with open(run / "results.csv", newline="") as f:
        trial = next(r["trial_id"] for r in csv.DictReader(f)
                     if r["method"] == "echokd" and r["status"] == "completed")
    result = run_cli(str(Path(__file__).resolve().parents[1] / "study" / "export.py"),
                     str(run), "--trial", trial, "--out", str(tmp_path), "--images", "16",
                     cwd=run.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    (card,) = tmp_path.glob("echokd/*/card.json")
    card = json.loads(card.read_text())
    assert card["method"]["label"] == "EchoKD" and card["run"]["trial_id"] == trial
    assert card["checks"]["onnx_max_diff"] <= 1e-4
    assert (card.get("files") or {}).keys() == {"student.pt", "student.torchscript.pt",
                                                "student.onnx"}
