import math

import pytest
import torch
from torch.nn import functional as F

from sdkd_core.checkpoint import load_checkpoint, save_checkpoint
from sdkd_core.data import load_dataset
from sdkd_core.distillers import build_distiller, get_method
from sdkd_core.distillers.vanilla import Vanilla
from sdkd_core.engine import Engine
from sdkd_core.errors import DivergedError, UserError
from sdkd_core.models import build_model
from sdkd_core.recipe import Recipe


def make_engine(data, epochs=2, seed=0, **recipe):
    torch.manual_seed(seed)
    model = build_model("resnet8", data.num_classes, data.in_channels)
    recipe = Recipe(epochs=epochs, batch_size=recipe.pop("batch_size", 64), **recipe)
    return Engine(Vanilla(model), data, recipe, device="cpu", seed=seed)


def test_training_learns_real_fashion_mnist(fmnist_small):
    engine = make_engine(fmnist_small, epochs=2, lr=0.1)
    history = engine.fit()
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["test_acc"] > 60.0  # chance is 10%
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["loss_ce"] == pytest.approx(history[-1]["train_loss"])
    assert history[-1]["test_acc_best"] == max(r["test_acc"] for r in history)


def make_method_engine(data, method, seed=5, epochs=3):
    torch.manual_seed(seed)
    student = build_model("resnet8", data.num_classes, data.in_channels)
    teacher = build_model("resnet14", data.num_classes, data.in_channels)
    values = {}
    if method == "sdkd":  # the snapshot is taken before the checkpoint and must survive it
        values = {"sdkd.proxy_weights": "snapshot", "sdkd.phase_boundary": 0.3}
    return Engine(build_distiller(method, student, teacher, values), data,
                  Recipe(epochs=epochs), device="cpu", seed=seed)


@pytest.mark.parametrize("method", ["vanilla", "sdkd", "dml", "crd"])
def test_resume_from_checkpoint_is_bit_exact(tmp_path, method):
    data = load_dataset("synthetic", n_train=640, n_test=200)
    straight = make_method_engine(data, method)
    straight.fit()

    first = make_method_engine(data, method)
    first.run_epoch()
    first.run_epoch()
    save_checkpoint(first.state_dict(), tmp_path / "ckpt.pt")
    state = load_checkpoint(tmp_path / "ckpt.pt")  # weights_only=True inside

    torch.manual_seed(123)  # a resumed process starts from other global RNG state
    resumed = make_method_engine(data, method)
    resumed.load_state_dict(state)
    resumed.fit()

    for (name, a), b in zip(straight.method.state_dict().items(),
                            resumed.method.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    timing = ("images_per_s", "train_s", "eval_s")

    def metrics(history):
        return [{k: v for k, v in row.items() if k not in timing} for row in history]

    assert metrics(straight.history) == metrics(resumed.history)


def test_checkpoint_refuses_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)


def test_step_schedule_and_warmup():
    r = Recipe(epochs=10, lr=0.1, schedule="step", milestones=(0.5, 0.8), warmup_epochs=1)
    spe = 10
    assert r.lr_factor(0, spe) == pytest.approx(0.1)  # first step of the warm-up
    assert r.lr_factor(9, spe) == pytest.approx(1.0)
    assert r.lr_factor(49, spe) == 1.0
    assert r.lr_factor(50, spe) == pytest.approx(0.1)
    assert r.lr_factor(80, spe) == pytest.approx(0.01)
    c = Recipe(epochs=4, schedule="cosine")
    assert c.lr_factor(0, 10) == 1.0 and c.lr_factor(20, 10) == pytest.approx(0.5)
    assert c.lr_factor(40, 10) == pytest.approx(0.0, abs=1e-12)
    p = Recipe(epochs=4, schedule="poly", warmup_epochs=1)  # DeepLab's (1 - progress)^0.9
    assert p.lr_factor(10, 10) == 1.0 and p.lr_factor(20, 10) == pytest.approx((2 / 3) ** 0.9)
    assert p.lr_factor(40, 10) == pytest.approx(0.0, abs=1e-12)


def test_scheduler_reaches_the_optimizer(synthetic):
    engine = make_engine(synthetic, epochs=2, lr=0.2, schedule="step", milestones=(0.5,))
    first = engine.run_epoch()
    second = engine.run_epoch()
    assert first["lr"] == pytest.approx(0.02) and second["lr"] == pytest.approx(0.02)
    assert engine.optimizers["student"].param_groups[0]["lr"] == pytest.approx(0.02)


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("epochs", 0, "epochs=0"),
        ("lr", -1.0, "lr=-1.0"),
        ("milestones", (0.5, 1.5), "fractions"),
        ("milestones", (0.75, 0.5), "increasing"),
        ("milestones", (0.5, 0.5), "each once"),
        ("lr", float("inf"), "lr=inf must be positive and finite"),
        ("weight_decay", float("inf"), "weight_decay=inf must be finite"),
        ("momentum", float("nan"), "momentum=nan"),
        ("batch_size", 1, "batch_size=1"),
        ("schedule", "linear", "step, cosine or poly"),
        ("warmup_epochs", 9, "warmup_epochs"),
    ],
)
def test_bad_recipe_is_one_clear_line(field, value, fragment):
    with pytest.raises(UserError, match=fragment):
        Recipe(**{"epochs": 4, field: value})


def test_batch_larger_than_data_is_reported(synthetic):
    with pytest.raises(UserError, match="larger than the"):
        make_engine(synthetic, batch_size=5000)


def test_nan_loss_raises_diverged(synthetic):
    class Exploding(Vanilla):
        def forward(self, x, y, epoch):
            logits = self.student(x).logits
            return logits, {"ce": F.cross_entropy(logits, y) * math.inf}

    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1)
    engine = Engine(Exploding(model), synthetic, Recipe(epochs=2), device="cpu")
    with pytest.raises(DivergedError) as err:
        engine.run_epoch()
    assert err.value.epoch == 1


def test_teacher_stays_frozen_and_off_the_state_dict(synthetic):
    torch.manual_seed(0)
    teacher = build_model("resnet8", 10, 1).eval()
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = Vanilla(build_model("resnet8", 10, 1), teacher)
    method.train()
    assert not teacher.training
    assert not any(k.startswith("teacher") for k in method.state_dict())
    Engine(method, synthetic, Recipe(epochs=1), device="cpu").run_epoch()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, buffers[k]), k


def test_unknown_method_suggests_nearest():
    with pytest.raises(UserError, match="did you mean 'vanilla'"):
        get_method("vanila")
    with pytest.raises(UserError, match="unknown device"):
        make_engine_device("gpu0")
    with pytest.raises(UserError, match="unknown device 'meta'"):  # a device torch knows
        make_engine_device("meta")


def make_engine_device(name):
    from sdkd_core.engine import select_device

    return select_device(name)
