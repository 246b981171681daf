"""Datasets of image files: the layouts, odd and bad files, and the two paths (in memory,
streamed through Ray Data) giving the same images and the same accuracy."""

from __future__ import annotations

import io
import statistics

import numpy as np
import pytest
import torch
from conftest import fashion_folder, init_ray, run_cases_in_folders
from PIL import Image

from sdkd_core.data import load_dataset
from sdkd_core.datasets import DATASET_INFO
from sdkd_core.errors import UserError
from sdkd_core.file_data import FileSplits, files_info
from sdkd_core.image_files import list_dataset
from sdkd_core.image_views import eval_view


@pytest.fixture(scope="module")
def ray_local():
    """One Ray for this module's streamed loaders (the session's head, two CPUs)."""
    import ray

    init_ray(configure_logging=False)
    yield
    ray.shutdown()


def fashion_images(n: int) -> list[np.ndarray]:
    """n real Fashion-MNIST images as RGB uint8 [H, W, 3] of 40x30 (not square, not 32)."""
    data = load_dataset("fashion_mnist", n_train=max(n, 10), n_test=10, seed=0)
    out = []
    for img in data.train_x[:n]:
        gray = Image.fromarray(img[0].numpy()).resize((40, 30), Image.BILINEAR)
        out.append(np.asarray(gray.convert("RGB")))
    return out


def write_folder(root, classes=("coat", "shoe"), per_class=4, splits=("train", "val")):
    images = iter(fashion_images(len(classes) * per_class * len(splits)))
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(next(images)).save(root / split / c / f"{i}.JPEG", quality=95)
    return root


# ------------------------------------------------------------------ odd files


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """A folder whose train/coat holds every odd file ImageNet has, and two that are broken."""
    root = write_folder(tmp_path_factory.mktemp("odd") / "data")
    coat = root / "train" / "coat"
    rgb = fashion_images(12)[-1]
    Image.fromarray(rgb).save(coat / "png-named.JPEG", format="PNG")
    Image.fromarray(rgb).convert("CMYK").save(coat / "cmyk.JPEG", quality=95)
    Image.fromarray(rgb).convert("L").save(coat / "gray.JPEG", quality=95)
    (coat / "README.txt").write_text("not an image\n")
    (coat / "corrupt.JPEG").write_bytes(b"\xff\xd8 this is no JPEG" * 20)
    whole = io.BytesIO()
    Image.fromarray(rgb).save(whole, format="JPEG", quality=95)
    (coat / "truncated.JPEG").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    return root, rgb


def views_by_name(data, listing):
    """{file name: the image's view} of the in-memory training images (skipped files absent)."""
    decoded = [p for p in listing.paths if p.split("/")[-1] not in ("corrupt.JPEG",
                                                                   "truncated.JPEG")]
    assert len(decoded) == len(data.train_y)
    return {p.split("/")[-1]: data.train_x[i] for i, p in enumerate(decoded)}


def test_odd_files_are_decoded_right_and_broken_ones_skipped_and_counted(odd_folder):
    root, rgb = odd_folder
    data = load_dataset("imagefolder", root, image_size=32, crop="pad", stream=False)
    files = list_dataset("imagefolder", root)
    info = data.info
    # Not an image by its name: left out at listing and counted; the two broken JPEGs are
    # listed, fail to decode, and are skipped and counted.
    assert (data.ignored, data.skipped) == (1, 2)
    assert len(files.train) == 8 + 5 and len(data.train_y) == 8 + 3
    views = views_by_name(data, files.train)
    # A PNG named .JPEG is decoded as the PNG it is: exactly its pixels' view.
    assert torch.equal(views["png-named.JPEG"], torch.from_numpy(eval_view(rgb, info)))
    # CMYK and grayscale JPEGs become RGB: close to the source, gray with equal channels.
    source = torch.from_numpy(eval_view(rgb, info)).float()
    assert (views["cmyk.JPEG"].float() - source).abs().mean() < 8
    gray = views["gray.JPEG"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert (gray.float().mean(0) - source.mean(0)).abs().mean() < 8


def test_the_streamed_path_skips_and_counts_the_same_broken_files(odd_folder, ray_local):
    from study.streaming import StreamedData

    root, _ = odd_folder
    splits = load_dataset("imagefolder", root, image_size=32, crop="pad", stream=True)
    assert isinstance(splits, FileSplits) and splits.ignored == 1
    loader = StreamedData(splits, decode_cpus=0.5).loader("train", batch_size=4, seed=0)
    seen = sum(len(y) for _, y in loader)
    # 13 files, 12 in whole batches of 4; both broken files are among them or one is not.
    assert loader.skipped in (1, 2) and seen == 12 - loader.skipped
    eval_loader = StreamedData(splits).loader("test", batch_size=5)
    assert sum(len(y) for _, y in eval_loader) == 8 and eval_loader.skipped == 0


# ------------------------------------------------------------------ layouts


def write_tiny(tiny, annotations: bool = True):
    """Tiny-ImageNet's layout: 2 classes of 2 training images, 3 labelled val images."""
    images = iter(fashion_images(8))
    lines = []
    for wnid in ("n01443537", "n01629819"):
        (tiny / "train" / wnid / "images").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(next(images)).save(tiny / "train" / wnid / "images" /
                                               f"{wnid}_{i}.JPEG")
        (tiny / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # as distributed
    (tiny / "val" / "images").mkdir(parents=True)
    for i, wnid in enumerate(("n01629819", "n01443537", "n01629819")):
        Image.fromarray(next(images)).save(tiny / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t10\t10")
    if annotations:
        (tiny / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tiny


def test_tiny_imagenet_and_imagenet_layouts_are_listed_and_take_their_path(tmp_path):
    tiny = write_tiny(tmp_path / "tiny-imagenet-200")
    data = load_dataset("tiny_imagenet", tiny)
    assert data.info.num_classes == 2 and data.info.image_size == 64
    assert data.test_y.tolist() == [1, 0, 1] and data.train_y.tolist() == [0, 0, 1, 1]
    assert data.ignored == 0  # the boxes files lie beside images/, not in it
    assert tuple(data.train_x.shape) == (4, 3, 64, 64)  # in memory: small, pad crop

    net = write_folder(tmp_path / "imagenet", classes=("n01440764", "n01443537"), per_class=2)
    streamed = load_dataset("imagenet", net)
    assert isinstance(streamed, FileSplits)  # ImageNet's resized crop always streams
    assert streamed.info.num_classes == 2 and streamed.info.crop == "resized"
    assert streamed.train.paths[0] == "train/n01440764/0.JPEG"


def test_which_path_a_dataset_takes_is_the_documented_rule():
    from sdkd_core.file_data import MEMORY_LIMIT_BYTES, streams

    tiny = DATASET_INFO["tiny_imagenet"]
    assert not streams(tiny, tiny.n_train, None)  # 1.2 GB decoded
    assert streams(DATASET_INFO["imagenet"], 1000, None)  # resized crop: always
    size = tiny.in_channels * tiny.image_size ** 2
    assert streams(tiny, MEMORY_LIMIT_BYTES // size + 1, None)
    assert streams(tiny, 10, True) and not streams(tiny, 10**9, False)
    with pytest.raises(UserError, match="stream: false needs crop: pad"):
        streams(DATASET_INFO["imagenet"], 10, False)


# ------------------------------------------------------------------ bad input


def _space(root: str, extra: str = "") -> str:
    return ("name: bad\n"
            f"dataset: {{name: imagefolder, root: '{root}', image_size: 32, crop: pad{extra}}}\n"
            "recipe: {epochs: 1, batch_size: 32}\n"
            "pairs: [{teacher: resnet14, student: resnet8}]\nbaselines: [kd]\n")


def test_bad_folders_are_one_line_exit_2_with_nothing_written(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    empty = base / "empty"
    empty.mkdir()
    no_images = write_folder(base / "no-images")
    (no_images / "train" / "hat").mkdir()
    (no_images / "val" / "hat").mkdir()
    (no_images / "train" / "hat" / "notes.txt").write_text("no images here\n")
    differ = write_folder(base / "differ")
    (differ / "val" / "coat").rename(differ / "val" / "jacket")
    no_val = write_folder(base / "no-val", splits=("train",))
    one_class = write_folder(base / "one", classes=("coat",))
    tiny = write_tiny(base / "tiny", annotations=False)
    good = write_folder(base / "good")
    cases = [
        (_space(str(base / "missing")), "does not exist"),
        (_space(str(empty)), "is empty"),
        (_space(str(no_images)), "has no images"),
        (_space(str(differ)), "different classes (only in train/: coat; only in val/: jacket)"),
        (_space(str(no_val)), "neither val/ nor test/"),
        (_space(str(one_class)), "a classifier needs at least two"),
        (_space(str(good), ", stream: false, crop: resized").replace(", crop: pad", ""),
         "stream: false needs crop: pad"),
        (_space(str(tiny)).replace("imagefolder", "tiny_imagenet"), "val_annotations.txt"),
        ("name: bad\ndataset: {name: fashion_mnist, image_size: 64}\n"
         "pairs: [{teacher: resnet14, student: resnet8}]\nbaselines: [kd]\n",
         "image_size applies to datasets of image files"),
    ]
    spaces = []
    for i, (text, _) in enumerate(cases):
        spaces.append(base / f"space{i}.yaml")
        spaces[-1].write_text(text)
    runs = run_cases_in_folders(
        tmp_path_factory, "study.sweep", [(str(s), f) for s, (_, f) in zip(spaces, cases,
                                                                           strict=True)],
        lambda folder, space: ["--space", space, "--output", str(folder / "run")])
    for i, (folder, result) in runs.items():
        fragment = cases[i][1]
        assert result.returncode == 2, (i, result.stdout[-500:], result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (i, result.stderr)
        assert "Traceback" not in result.stderr and not (folder / "run").exists()


# ------------------------------------------------------------------ the streamed loader


def test_streamed_batches_are_the_epochs_seeded_order_dealt_to_the_ranks(ray_local):
    from study.streaming import StreamedData

    splits = load_dataset("imagefolder", fashion_folder(), image_size=32, crop="pad",
                          stream=True, n_train=200)
    data = StreamedData(splits, decode_cpus=0.5)

    def epoch(e, rank=0, world=1, seed=0):
        loader = data.loader("train", batch_size=20, seed=seed, rank=rank, world_size=world,
                             inputs=("index",))
        loader.set_epoch(e)
        batches = list(loader.batches())
        return (torch.cat([x for x, _, _ in batches]), torch.cat([y for _, y, _ in batches]),
                torch.cat([i["index"] for _, _, i in batches]))

    x0, y0, i0 = epoch(0)
    again = epoch(0)
    assert torch.equal(x0, again[0]) and torch.equal(i0, again[2])  # the same every time
    x1, _, i1 = epoch(1)
    assert not torch.equal(i0, i1) and sorted(i0.tolist()) == sorted(i1.tolist())
    assert torch.equal(y0, data.train_y[i0])  # labels travel with their files
    # Two ranks: disjoint halves of the same epoch's order, each image as one rank saw it.
    parts = [epoch(0, rank, 2) for rank in (0, 1)]
    assert set(parts[0][2].tolist()).isdisjoint(parts[1][2].tolist())
    assert sorted(torch.cat([p[2] for p in parts]).tolist()) == sorted(i0.tolist())
    position = {int(k): n for n, k in enumerate(i0)}
    for x, _, idx in parts:
        assert torch.equal(x, x0[[position[int(k)] for k in idx]])
    # Normalised with the dataset's mean and std, like the in-memory loader's batches.
    info = files_info(DATASET_INFO["imagefolder"], list_dataset("imagefolder", fashion_folder()),
                      32, "pad")
    assert info == splits.info
    assert abs(float(x0.mean())) < 1.5 and x0.shape[1:] == (3, 32, 32)


# ------------------------------------------------------------------ the two paths agree


def _accuracy(data, seed: int) -> float:
    from sdkd_core.distillers import build_distiller
    from sdkd_core.engine import Engine
    from sdkd_core.models import build_model
    from sdkd_core.recipe import Recipe

    torch.manual_seed(seed)
    method = build_distiller("vanilla", build_model("resnet8", 10, 3),
                             build_model("resnet8", 10, 3), {})
    engine = Engine(method, data, Recipe(epochs=3, batch_size=50, lr=0.05), device="cpu",
                    seed=seed)
    return engine.fit()[-1]["test_acc"]


@pytest.mark.slow
def test_in_memory_and_streamed_paths_reach_the_same_accuracy(ray_local):
    """The same files, the same crop and flip recipe: held in memory (augmented on the device)
    or streamed through Ray Data (augmented in its workers), two seeds each."""
    from study.streaming import StreamedData

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray Data's decoding needs the other core
    try:
        kwargs = dict(image_size=28, crop="pad", n_train=1000)
        memory = load_dataset("imagefolder", fashion_folder(), stream=False, **kwargs)
        streamed = StreamedData(load_dataset("imagefolder", fashion_folder(), stream=True,
                                             **kwargs), decode_cpus=0.5)
        accs = {path: [_accuracy(data, seed) for seed in (0, 1)]
                for path, data in (("memory", memory), ("streamed", streamed))}
    finally:
        torch.set_num_threads(threads)
    spread = max(max(a) - min(a) for a in accs.values())
    gap = abs(statistics.mean(accs["memory"]) - statistics.mean(accs["streamed"]))
    print(f"top-1 after 3 epochs: {accs}; gap of the means {gap:.2f}, spread {spread:.2f}")
    assert all(a > 40 for v in accs.values() for a in v), accs  # they learn (chance: 10%)
    assert gap <= max(spread, 2.0), (accs, gap, spread)


def test_a_decoding_worker_killed_mid_epoch_loses_no_image(ray_local):
    """SIGKILL every Ray Data decoding worker that starts a task, until one was killed
    mid-epoch: Ray retries its task and the epoch is the very epoch of an undisturbed run."""
    import signal
    import threading

    import psutil

    from study.streaming import StreamedData

    splits = load_dataset("imagefolder", fashion_folder(), image_size=32, crop="pad",
                          stream=True, n_train=500)
    data = StreamedData(splits, decode_cpus=0.5)

    def epoch():
        loader = data.loader("train", batch_size=50, seed=3, inputs=("index",))
        batches = list(loader.batches())
        return torch.cat([i["index"] for _, _, i in batches]), torch.cat([x for x, _, _ in
                                                                          batches])

    undisturbed = epoch()
    killed, halt = [], threading.Event()

    def killer():
        while not halt.is_set() and len(killed) < 2:
            for proc in psutil.process_iter(["cmdline"]):
                if any("MapBatches(decode_batch)" in part for part in proc.info["cmdline"] or ()):
                    try:
                        proc.send_signal(signal.SIGKILL)
                        killed.append(proc.pid)
                    except psutil.Error:
                        pass
            halt.wait(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        disturbed = epoch()
    finally:
        halt.set()
        thread.join()
    assert killed, "no decoding worker was running to kill"
    assert torch.equal(disturbed[0], undisturbed[0]) and torch.equal(disturbed[1], undisturbed[1])


# ------------------------------------------------------------------ ImageNet's plan


def test_the_imagenet_plan_prints_its_gpu_hours_without_its_files(tmp_path):
    """study/spaces/imagenet.yaml names images and torchvision weights this machine lacks: its
    plan still prints (pairs, trials, GPU-hours) and reads and writes nothing."""
    from conftest import run_cli

    run = tmp_path / "run"
    result = run_cli("study/sweep.py", "--space", "study/spaces/imagenet.yaml", "--dry-run",
                     "--output", str(run))
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imagenet (1256167 train / 25000 validation / 50000 test images)" in out, out
    assert "pair resnet50->MobileNetV1: kd.temperature=1" in out
    assert "8 worker(s) per trial" in out and "GPU-hours" in out
    assert out.count("not on this machine") == 2
    assert not run.exists()
