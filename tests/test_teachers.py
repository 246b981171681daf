import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from filelock import FileLock, Timeout

from sdkd_core.files import file_sha256
from sdkd_core.recipe import Recipe
from study.sections import DatasetSection
from study.teachers import TeacherCache, TeacherSpec
from tests.conftest import (
    ROOT,
    assert_quick_usage_error,
    run_cases_in_folders,
    run_cli,
)

SMALL = ["--dataset", "synthetic", "--arch", "resnet8", "--epochs", "2", "--n-test", "200"]


def teacher(dataset: str, arch: str, recipe: Recipe, seed: int = 0, n_train: int | None = None,
            n_test: int | None = None) -> TeacherSpec:
    return TeacherSpec(DatasetSection(name=dataset, n_train=n_train, n_test=n_test), arch,
                       recipe, seed)


def test_cli_trains_then_serves_from_cache(tmp_path):
    cache = ["--cache-dir", str(tmp_path)]
    first = run_cli("study/teachers.py", *SMALL, *cache)
    assert first.returncode == 0, first.stderr
    assert "epoch   2/2" in first.stdout and "img/s" in first.stdout and "ETA" in first.stdout
    assert "trained in" in first.stdout
    cards = list((tmp_path / "teachers").glob("*.json"))
    assert len(cards) == 1
    card = json.loads(cards[0].read_text())
    assert card["test_acc"] > 30.0 and len(card["history"]) == 2 and card["n_test"] == 200

    start = time.perf_counter()
    second = run_cli("study/teachers.py", *SMALL, *cache)
    assert second.returncode == 0 and "from the cache" in second.stdout
    assert "epoch   1/2" not in second.stdout  # nothing was trained again
    assert time.perf_counter() - start < 30  # generous: this only guards against retraining
    assert f"{card['test_acc']:.2f}%" in second.stdout


def test_cache_key_changes_with_everything_that_shapes_the_weights():
    base = teacher("synthetic", "resnet8", Recipe(epochs=2), seed=0, n_train=600)
    variants = [
        teacher("synthetic", "resnet14", Recipe(epochs=2), seed=0, n_train=600),
        teacher("synthetic", "resnet8", Recipe(epochs=3), seed=0, n_train=600),
        teacher("synthetic", "resnet8", Recipe(epochs=2, lr=0.1), seed=0, n_train=600),
        teacher("synthetic", "resnet8", Recipe(epochs=2), seed=1, n_train=600),
        teacher("synthetic", "resnet8", Recipe(epochs=2), seed=0, n_train=700),
        teacher("fashion_mnist", "resnet8", Recipe(epochs=2), seed=0, n_train=600),
    ]
    keys = {base.key, *(v.key for v in variants)}
    assert len(keys) == len(variants) + 1
    assert teacher("synthetic", "resnet8", Recipe(epochs=2), 0, 600).key == base.key


def test_corrupted_cache_is_retrained_with_a_warning(tmp_path, synthetic, capsys):
    spec = teacher("synthetic", "resnet8", Recipe(epochs=1), n_train=None)
    cache = TeacherCache(tmp_path)
    model, card, cached = cache.get(spec, data=synthetic, device="cpu", log=lambda _: None)
    assert not cached
    weights, _ = cache.paths(spec)
    again, _, cached = cache.get(spec, data=synthetic, device="cpu")
    assert cached and not again.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values(), strict=True))

    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(blob))
    _, card2, cached = cache.get(spec, data=synthetic, device="cpu", log=lambda _: None)
    assert not cached
    warning = capsys.readouterr().err
    assert "does not match its recorded hash" in warning and "retraining it" in warning
    assert cache.load(spec) is not None  # the retrained teacher is cached again

    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    assert cache.load(spec) is None


BAD_INPUT = [
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--arch", "resnet21"], "did you mean 'resnet20'"),
    (["--data-root", "/no/such/dir"], "data folder '/no/such/dir' does not exist"),
    (["--n-train", "70000"], "n_train=70000 is larger than the 60000"),
    (["--epochs", "zero"], "invalid int value"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--milestones", "half"], "comma-separated"),
    (["--device", "cuda"], "no CUDA GPU"),
    # Every flag's value, checked before the cache is read or data loaded.
    (["--lr", "0"], "--lr 0.0: must be positive and finite, like 0.05"),
    (["--lr=-inf"], "--lr -inf"),
    (["--momentum", "nan"], "--momentum nan: must be in [0, 1)"),
    (["--weight-decay", "-1"], "--weight-decay -1.0: must be finite and >= 0"),
    (["--gamma", "1.5"], "--gamma 1.5: must be in (0, 1]"),
    (["--warmup-epochs", "inf"], "--warmup-epochs inf: must be in [0, epochs)"),
    (["--warmup-epochs", "-1"], "--warmup-epochs -1.0"),
    (["--milestones", "0.5,1.5"], "--milestones 0.5,1.5: must be increasing fractions"),
    (["--milestones", "nan"], "--milestones nan"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 2"),
    (["--n-train", "0"], "--n-train 0: must be a positive number of images"),
    (["--n-test", "0"], "--n-test 0"),
    (["--seed", "4294967296"], "--seed 4294967296: must be in 0..4294967295"),
    (["--cache-dir", "{file}"], "is a file, not a folder; pass a folder path"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
]


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """{case: (cache folder, result)}: every BAD_INPUT case through `teachers.py`'s main."""
    return run_cases_in_folders(tmp_path_factory, "study.teachers", BAD_INPUT,
                                lambda cache, args: ["--cache-dir", str(cache), *args])


@pytest.mark.parametrize("case", range(len(BAD_INPUT)), ids=[f for _, f in BAD_INPUT])
def test_bad_input_one_line_exit_2_nothing_written(bad_input_runs, case):
    cache, result = bad_input_runs[case]
    assert_quick_usage_error(result, BAD_INPUT[case][1])
    assert not any(cache.iterdir())


@pytest.mark.slow
def test_teacher_recipe_reaches_a_strong_teacher_quickly(tmp_path):
    """The README's teacher command, shortened (2 epochs, 4,000 images): already far above
    chance (10%). Here it gives 75%; the full command's 88% is in docs/benchmarks.md."""
    result = run_cli("study/teachers.py", "--dataset", "fashion_mnist", "--arch", "resnet20",
                     "--epochs", "2", "--n-train", "4000", "--n-test", "2000",
                     "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    card = json.loads(next((tmp_path / "teachers").glob("*.json")).read_text())
    assert card["n_test"] == 2000 and card["n_train"] == 4000
    assert card["test_acc"] >= 72.0, result.stdout


def test_cached_teacher_holding_code_is_refused_even_with_a_matching_hash(tmp_path, synthetic,
                                                                          capsys):
    """weights_only=True: a cache file rewritten to run code (its card's hash updated too) is
    not executed; it is reported and the teacher retrained."""
    import pickle

    from sdkd_core.files import file_sha256

    spec = teacher("synthetic", "resnet8", Recipe(epochs=1))
    cache = TeacherCache(tmp_path)
    cache.get(spec, data=synthetic, device="cpu", log=lambda _: None)
    weights, card_path = cache.paths(spec)
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    torch.save({"conv.weight": Payload()}, weights, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    card = json.loads(card_path.read_text())
    card["weights_sha256"] = file_sha256(weights)
    card_path.write_text(json.dumps(card))
    assert cache.load(spec) is None
    assert not marker.exists()
    assert "retraining it" in capsys.readouterr().err


# ---------------------------------------------------------------- one trainer per teacher

ONE_EPOCH = ["--dataset", "synthetic", "--arch", "resnet8", "--epochs", "1", "--n-train", "600",
             "--n-test", "200"]
ONE_EPOCH_SPEC = teacher("synthetic", "resnet8", Recipe(epochs=1), 0, n_train=600, n_test=200)


def start_cli(out_path, *args):
    """`python study/teachers.py args...` in the background, its output (unbuffered) to a file."""
    with open(out_path, "w") as out:
        return subprocess.Popen([sys.executable, "study/teachers.py", *args], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_output(proc, out_path, text, timeout=120.0):
    deadline = time.monotonic() + timeout
    while text not in out_path.read_text():
        assert proc.poll() is None, f"exited {proc.returncode}: {out_path.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in: {out_path.read_text()}"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_processes_needing_the_same_teacher_train_it_once(tmp_path):
    """Two `teachers.py` started together on one cache: one trains, the other waits for its
    lock and loads the result. The test holds the teacher's lock until both are waiting, so
    neither can finish before the other has looked (no reliance on timing)."""
    cache = TeacherCache(tmp_path)
    test_lock = FileLock(cache.lock_path(ONE_EPOCH_SPEC))
    test_lock.acquire()
    outs = [tmp_path / f"out{i}.txt" for i in range(2)]
    procs = [start_cli(out, *ONE_EPOCH, "--cache-dir", str(tmp_path)) for out in outs]
    try:
        for proc, out in zip(procs, outs, strict=True):
            wait_for_output(proc, out, "waiting for another process training teacher resnet8")
        test_lock.release()
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        for proc in procs:
            proc.kill()
    texts = [out.read_text() for out in outs]
    assert [p.returncode for p in procs] == [0, 0], texts
    for text in texts:
        assert f"(lock {cache.lock_path(ONE_EPOCH_SPEC)}); waited 0:00:00" in text
    trained = [t for t in texts if re.search(r"^training teacher resnet8", t, re.MULTILINE)]
    assert len(trained) == 1, texts  # exactly one trained
    assert sum("trained in" in t for t in texts) == 1
    assert sum("from the cache" in t for t in texts) == 1
    assert "epoch   1/1" not in next(t for t in texts if t not in trained)

    # both report the same weights: the one file in the cache, with its recorded hash
    weights, card_path = cache.paths(ONE_EPOCH_SPEC)
    reported = [re.findall(r"weights: (.+) \(SHA-256 (\w+)\)", t) for t in texts]
    assert reported[0] == reported[1] == [(str(weights), file_sha256(weights))]
    card = json.loads(card_path.read_text())
    assert card["weights_sha256"] == file_sha256(weights)
    accuracy = [re.findall(r"test top-1 .*%", t) for t in texts]
    assert accuracy[0] == accuracy[1] and f"{card['test_acc']:.2f}%" in accuracy[0][0]


def test_cached_teacher_loads_without_waiting_for_the_lock(tmp_path):
    """The fast path: a cached teacher is served even while another holder has its lock."""
    from sdkd_core.models import build_model

    spec = teacher("synthetic", "resnet8", Recipe(epochs=1))
    cache = TeacherCache(tmp_path)
    cache.save(spec, build_model("resnet8", 10, 1), {"num_classes": 10, "in_channels": 1})
    lines = []
    with FileLock(cache.lock_path(spec)):
        _, _, cached = cache.get(spec, device="cpu", log=lines.append)
    assert cached and lines == []


@pytest.mark.slow
def test_a_killed_trainer_does_not_hold_the_teacher_lock(tmp_path):
    """A trainer killed with SIGKILL mid-training: the kernel drops its flock, so the next
    process takes the teacher's lock at once (and no teacher is cached)."""
    out = tmp_path / "out.txt"
    args = [*ONE_EPOCH, "--epochs", "500", "--cache-dir", str(tmp_path)]
    proc = start_cli(out, *args)
    try:
        wait_for_output(proc, out, "600 train / 200 test images, 500 epochs")
        spec = teacher("synthetic", "resnet8", Recipe(epochs=500), 0, n_train=600, n_test=200)
        lock = FileLock(TeacherCache(tmp_path).lock_path(spec))
        with pytest.raises(Timeout):
            lock.acquire(timeout=0.2)  # it holds the lock while it trains
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    start = time.monotonic()
    lock.acquire(timeout=1)
    assert time.monotonic() - start < 1
    lock.release()
    assert TeacherCache(tmp_path).load(spec) is None
