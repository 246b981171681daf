"""Several workers: the recipe's batch is global and split over the ranks, and every method
trains under real two-rank DDP (gloo on the CPU, processes from torch.multiprocessing) wrapped
by the workers' own `study.trial.ddp_wrap`."""

import math
import os
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import assert_usage_error, run_mains
from torch import distributed as dist
from torch import nn

from sdkd_core.data import load_dataset
from sdkd_core.engine import Engine
from sdkd_core.errors import UserError
from sdkd_core.loader import BatchLoader
from sdkd_core.recipe import Recipe
from study.distill import build_method
from study.runfolder.trials import PlannedTrial
from study.trial import ddp_wrap, with_sync_batchnorm

# 65 test images: the ranks' evaluation shards differ in size (33 and 32).
N_TRAIN, N_TEST, BATCH, EPOCHS = 128, 65, 32, 2
TIMING = {"images_per_s", "train_s", "eval_s"}
# (case, method, settings, extra heads it scores). Phase boundary 0.5: k switches on (and the
# snapshot is taken) in the second epoch, so both of SDKD's phases run under DDP.
CASES = [
    ("sdkd-live", "sdkd", {"sdkd.proxy_weights": "live"}, {"proxy"}),
    ("sdkd-snapshot", "sdkd", {"sdkd.proxy_weights": "snapshot"}, {"proxy"}),
    ("sdkd-teacher-proxy", "sdkd", {"sdkd.proxy_arch": "teacher"}, {"proxy"}),
    ("sdkd-no-teacher-feats", "sdkd", {"sdkd.use_teacher_feats": False}, {"proxy"}),
    ("shake", "shake", {}, {"shadow"}),
    ("dml", "dml", {}, {"peer"}),
    ("dkd", "dkd", {"dkd.warmup_epochs": 1.0}, set()),
    ("fitnet", "fitnet", {}, set()),
    ("at", "at", {}, set()),
    ("reviewkd", "reviewkd", {}, set()),
    ("kd", "kd", {}, set()),
    ("dist", "dist", {}, set()),
    ("mlkd", "mlkd", {}, set()),  # with the loader's strong views, a different one per rank
    # 128 images: the default 16384 negatives are drawn with replacement; 64 without.
    ("crd", "crd", {}, set()),
    ("crd-kd", "crd", {"crd.kd_weight": 1.0, "crd.nce_k": 64}, set()),
]
SYNC_BN_CASES = ["sdkd-live", "shake", "dml"]


def engine_for(case: str, data, **kwargs) -> Engine:
    """The distiller with an untrained (random, seeded) teacher: DDP is what is under test."""
    _, method, settings, _ = next(c for c in CASES if c[0] == case)
    trial = PlannedTrial(method, "resnet14", "resnet8", params=settings)
    distiller, _ = build_method(trial, data.info)
    recipe = Recipe(epochs=EPOCHS, batch_size=kwargs.pop("batch_size", BATCH))
    return Engine(distiller, data, recipe, device=kwargs.pop("device", "cpu"), seed=trial.seed,
                  **kwargs)


def _rank_main(rank: int, world: int, folder: str, device_type: str, sync_bn: bool, cases):
    """One rank: train each case, save what the parent checks."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    torch.set_num_threads(1)  # two ranks on two cores
    cuda = device_type == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{folder}/store",
                            rank=rank, world_size=world)
    try:
        data = load_dataset("synthetic", n_train=N_TRAIN, n_test=N_TEST)
        out = {}
        for case in cases:
            engine = engine_for(case, data, device=device, rank=rank, world_size=world,
                                wrap=ddp_wrap(device, sync_batchnorm=sync_bn))
            names = {id(p): n for n, p in engine.method.named_parameters()}
            trained = [names[id(p)] for ps in engine.method.optim_groups().values() for p in ps]
            initial = {n: p.detach().cpu().clone() for n, p in engine.method.named_parameters()}
            engine.fit()
            out[case] = {
                "history": engine.history, "trained": trained, "initial": initial,
                "state": {k: v.cpu() for k, v in engine.method.state_dict().items()},
                "steps": {g: s.last_epoch for g, s in engine.schedulers.items()},
                "modules": sorted({type(m).__name__ for m in engine.method.modules()}),
            }
        torch.save(out, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_two_ranks(folder: Path, device_type="cpu", sync_bn=False, cases=None, limit_s=300):
    ctx = mp.spawn(_rank_main, nprocs=2, join=False,
                   args=(2, str(folder), device_type, sync_bn, cases or [c[0] for c in CASES]))
    deadline = time.monotonic() + limit_s
    while not ctx.join(timeout=2):  # re-raises a rank's exception with its traceback
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"two-rank training did not finish in {limit_s} s")
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return run_two_ranks(tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=N_TRAIN, n_test=N_TEST)


def test_ranks_batches_together_are_the_single_workers_batches(data):
    labels = torch.arange(N_TRAIN)  # labels that name each image

    def batches(rank, world):
        loader = BatchLoader(data.train_x, labels, data.info, BATCH // world, train=True,
                             seed=3, rank=rank, world_size=world)
        loader.set_epoch(1)
        return [set(y.tolist()) for _, y in loader]

    one, r0, r1 = batches(0, 1), batches(0, 2), batches(1, 2)
    assert len(one) == len(r0) == len(r1) == N_TRAIN // BATCH
    assert all(a | b == whole and not a & b for a, b, whole in zip(r0, r1, one, strict=True))


@pytest.mark.slow
def test_one_and_two_workers_take_the_same_optimizer_steps(two_ranks, data):
    single = engine_for("kd", data)
    single.fit()
    steps = single.schedulers["student"].last_epoch
    assert steps == EPOCHS * (N_TRAIN // BATCH)
    lrs = [row["lr"] for row in single.history]
    for rank in two_ranks:
        for case, result in rank.items():
            assert set(result["steps"].values()) == {steps}, case
            assert [row["lr"] for row in result["history"]] == lrs, case  # same schedule


def test_engine_refuses_a_batch_that_does_not_split(data):
    with pytest.raises(UserError, match="batch_size=32 does not divide among world_size=3 "
                                        "workers; use a multiple of 3 such as 30 or 33"):
        engine_for("kd", data, rank=0, world_size=3)
    with pytest.raises(UserError, match="gives each of world_size=4 workers 1 image"):
        engine_for("kd", data, batch_size=4, world_size=4)


SPACE = """\
name: ddp
dataset: {{name: synthetic, n_train: 128, n_test: 64}}
recipe: {{epochs: 1, batch_size: {batch}}}
pairs: [{{teacher: resnet14, student: resnet8}}]
resources: {{num_workers: {workers}{extra}}}
"""
BAD_SPACES = [
    (30, 4, "", "recipe.batch_size=30 does not divide among resources.num_workers=4 workers; "
                "use a multiple of 4 such as 28 or 32"),
    (4, 4, "", "recipe.batch_size=4 gives each of resources.num_workers=4 workers 1 image a "
               "step and BatchNorm needs at least 2; use 8 or more"),
    (32, 2, ", sync_batchnorm: true", "resources: sync_batchnorm: true needs use_gpu: true"),
]


def test_space_refuses_a_batch_that_does_not_split(tmp_path):
    calls = []
    for i, (batch, workers, extra, _) in enumerate(BAD_SPACES):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(SPACE.format(batch=batch, workers=workers, extra=extra))
        calls.append(("study.sweep", ["--space", str(path), "--output", str(tmp_path / f"o{i}"),
                                      "--cache-dir", str(tmp_path / "cache")]))
    for (_, argv), result, (*_, fragment) in zip(calls, run_mains(calls), BAD_SPACES,
                                                 strict=True):
        assert_usage_error(result, f"{argv[1]}: {fragment}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"bad{i}.yaml" for i in range(3)]


def finite(row):
    return all(math.isfinite(v) for k, v in row.items()
               if k == "train_loss" or k.startswith("loss_"))


@pytest.mark.slow
@pytest.mark.parametrize("case, heads", [(c[0], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_every_method_trains_in_sync_under_two_rank_ddp(two_ranks, data, case, heads):
    r0, r1 = two_ranks[0][case], two_ranks[1][case]
    assert len(r0["history"]) == EPOCHS and all(finite(row) for row in r0["history"])
    last = r0["history"][-1]
    assert {k.removeprefix("test_acc_") for k in last
            if k.startswith("test_acc_") and k != "test_acc_best"} == heads
    # Metrics are summed over ranks, so both report the same numbers.
    assert [{k: v for k, v in row.items() if k not in TIMING} for row in r0["history"]] == \
        [{k: v for k, v in row.items() if k not in TIMING} for row in r1["history"]]
    # DDP kept the replicas identical, bit for bit (buffers too: both evaluate one model) ...
    assert r0["state"].keys() == r1["state"].keys()
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), name
    # ... and every parameter the method optimises was trained (received gradients).
    for name in r0["trained"]:
        assert not torch.equal(r0["state"][name], r0["initial"][name]), name
    # The two ranks' evaluation counted every test image once: one process scoring rank 0's
    # model on the whole test set gets the same accuracies.
    single = engine_for(case, data)
    single.method.load_state_dict(r0["state"])
    alone = single.evaluate()
    for key in ["test_acc", *(f"test_acc_{h}" for h in heads)]:
        assert alone[key] == pytest.approx(last[key], abs=1e-9), key


def test_sync_batchnorm_converts_what_trains_and_leaves_the_teacher(data):
    """On the CPU: the conversion (SyncBatchNorm's forward and DDP around it need GPUs)."""
    for case in SYNC_BN_CASES:
        engine = engine_for(case, data)
        teacher = engine.method.teacher
        before = {k: v.clone() for k, v in teacher.state_dict().items()} if teacher else {}
        assert with_sync_batchnorm(engine.method) is engine.method
        kinds = {type(m) for m in engine.method.modules()}
        assert nn.SyncBatchNorm in kinds and nn.BatchNorm2d not in kinds, case
        if teacher is not None:
            assert all(type(m) is not nn.SyncBatchNorm for m in teacher.modules())
            assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
