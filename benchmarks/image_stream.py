"""Image files: the decode path, the streamed loader against torchvision's ImageFolder, its peak
memory at N and 2N images, and (on a GPU) a ResNet-34 -> ResNet-18 KD and SDKD epoch through it.

    python benchmarks/image_stream.py [--cpus 2] [--images 1280] [--rss-images 640]
        [--decode-sizes 500x375,1200x900] [--decode-files 16] [--rounds 3] [--epochs 2]
        [--gpu-images 4096] [--gpu-cpus 16]

All images are generated JPEGs (quality 90) of photo-like content: smooth random fields at four
scales plus pixel noise, about half a byte per pixel (a 500x375 file is ~90 KB; ImageNet's
training files average about 110 KB).

1. Decode path, one process and one torch thread (per core): images/s of PIL (open, convert to
   RGB), PIL with JPEG draft mode to the size a 224 crop needs (`decode_image(path, 3, 256)`,
   the evaluation view's decode), and torchvision's `read_file` + `decode_jpeg` on the CPU, each
   followed by the same resize to 256 on the short side and centre crop 224 (`eval_view`); then
   the training view (full decode, RandomResizedCrop(224) + flip: `train_view`, or torchvision's
   v2 transforms on the decoded tensor). The paths take turns file by file, so the machine's
   other load falls on them alike.
2. Streamed images/s per CPU core: `study.streaming.StreamedLoader` over a training split of
   500x375 JPEGs (decode + RandomResizedCrop(224) + flip in Ray Data's workers, `--cpus` of them,
   normalised on the CPU as the device), against torchvision's `ImageFolder` + `DataLoader`
   (num_workers = `--cpus`; RandomResizedCrop(224), RandomHorizontalFlip, PILToTensor) on the
   same files; and the loader's Ray Data pipeline alone (its uint8 batches, not normalised).
   Ray starts with num_cpus = `--cpus` and `decode_cpus` = 1; each path runs a warm-up epoch
   on a few batches' files first (Ray's start and the workers' imports are not timed), then
   `--epochs` timed epochs, interleaved; images/s is divided by `--cpus`. Images per
   CPU-second (every process of the run: driver, Ray's daemons and workers, the DataLoader's
   workers) is given beside it: it holds better than wall time on a machine shared with
   other work.
3. Peak memory: one streamed epoch over N and over 2N of those files, each in a process of its
   own: the driver's peak RSS (getrusage) and the sum of the peaks of Ray's worker processes
   (VmHWM; shared object-store pages count in each process that maps them).
4. On a CUDA GPU: one KD and one SDKD training epoch, resnet34 -> resnet18, on generated 224x224
   JPEGs streamed through the engine (second epoch timed). Without one: not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, Result, Target, machine
from PIL import Image

from sdkd_core.data import load_dataset
from sdkd_core.datasets import DATASET_INFO
from sdkd_core.errors import UserError
from sdkd_core.image_files import decode_image
from sdkd_core.image_views import eval_view, train_view

RSS_GOAL = 1.10  # peak RSS at 2N images / at N
NOISE = 18  # pixel noise (std) of the generated images: ~0.5 bytes per pixel at quality 90
INFO = DATASET_INFO["imagenet"]  # 224 crops, resize 256 + centre crop 224 for evaluation
DRAFT = round(INFO.image_size / INFO.eval_crop)  # 256: what the evaluation view needs


# ----------------------------------------------------------------- generated JPEGs


def photo_like(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [h, w, 3]: smooth random colour fields at four scales and pixel noise."""
    acc = np.zeros((h, w, 3), np.float32)
    for cells, weight in ((3, 1.0), (12, 0.5), (48, 0.25), (160, 0.12)):
        small = rng.integers(0, 256, (max(2, cells * h // w), cells, 3), dtype=np.uint8)
        acc += weight * np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC),
                                   np.float32)
    acc *= 1 / 1.87
    acc += NOISE * rng.standard_normal((h, w, 3), dtype=np.float32)
    return np.clip(acc, 0, 255).astype(np.uint8)


def write_jpegs(paths: list[Path], w: int, h: int, seed: int = 0, bases: int = 8) -> float:
    """Each path a distinct w x h JPEG (a random crop of one of `bases` larger images, flipped
    at random); returns the mean file size in KB."""
    rng = np.random.default_rng(seed)
    big = [photo_like(w * 3 // 2, h * 3 // 2, rng) for _ in range(min(bases, len(paths)))]
    total = 0
    for k, path in enumerate(paths):
        base = big[k % len(big)]
        top, left = rng.integers(0, h // 2 + 1), rng.integers(0, w // 2 + 1)
        arr = base[top:top + h, left:left + w]
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(path, "JPEG", quality=90)
        total += path.stat().st_size
    return total / len(paths) / 1024


def write_folder(root: Path, n_train: int, w: int, h: int, classes: int = 10,
                 n_val_per_class: int = 2) -> float:
    """An `imagefolder` dataset: root/train/<class>/*.jpg (n_train) and root/val/<class>/*.jpg."""
    paths = [root / "train" / f"c{k % classes:03d}" / f"{k:06d}.jpg" for k in range(n_train)]
    paths += [root / "val" / f"c{k % classes:03d}" / f"{k:06d}.jpg"
              for k in range(classes * n_val_per_class)]
    return write_jpegs(paths, w, h)


# ----------------------------------------------------------------- 1. the decode path


def _tv_decode(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    return decode_jpeg(read_file(path), mode=ImageReadMode.RGB)


def _tv_eval(img: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    return F.center_crop(F.resize(img, DRAFT, antialias=True), INFO.image_size)


def _tv_train():
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(INFO.image_size, antialias=True),
                       v2.RandomHorizontalFlip()])


def decode_paths() -> dict[str, tuple[str, bool, object]]:
    """{name: (view, the code's own path, fn(path, rng) -> uint8 [3, 224, 224])}, in the
    table's order."""
    tv_train = _tv_train()

    def tv_hwc(p):
        return _tv_decode(p).permute(1, 2, 0).numpy()

    return {
        "PIL: open + convert RGB, full decode": (
            "eval", False, lambda p, rng: eval_view(decode_image(p, 3), INFO)),
        f"PIL draft mode to {DRAFT} (`decode_image(path, 3, {DRAFT})`)": (
            "eval", True, lambda p, rng: eval_view(decode_image(p, 3, DRAFT), INFO)),
        "torchvision read_file + decode_jpeg (CPU), same PIL resize": (
            "eval", False, lambda p, rng: eval_view(tv_hwc(p), INFO)),
        "torchvision read_file + decode_jpeg (CPU), tensor resize (v2, antialias)": (
            "eval", False, lambda p, rng: _tv_eval(_tv_decode(p))),
        "PIL full decode + `train_view`": (
            "train", True, lambda p, rng: train_view(decode_image(p, 3), INFO, rng)),
        "torchvision read_file + decode_jpeg (CPU) + `train_view`": (
            "train", False, lambda p, rng: train_view(tv_hwc(p), INFO, rng)),
        "torchvision read_file + decode_jpeg (CPU) + v2 RandomResizedCrop + flip on the tensor": (
            "train", False, lambda p, rng: tv_train(_tv_decode(p))),
    }


def decode_rates(files: list[str], rounds: int) -> dict[str, float]:
    """images/s of each path on one thread. Paths take turns file by file, so a machine's
    other load falls on them alike; the first round warms up (imports, page cache)."""
    paths = decode_paths()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds = dict.fromkeys(paths, 0.0)
    try:
        for r in range(rounds + 1):
            rngs = {name: np.random.default_rng(r) for name in paths}
            for f in files:
                for name, (_, _, fn) in paths.items():
                    start = time.perf_counter()
                    out = fn(f, rngs[name])
                    if r:
                        seconds[name] += time.perf_counter() - start
                    assert tuple(out.shape) == (3, INFO.image_size, INFO.image_size), out.shape
    finally:
        torch.set_num_threads(threads)
    return {name: rounds * len(files) / s for name, s in seconds.items()}


def measure_decode(args, work: Path) -> tuple[list[str], dict]:
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.decode_sizes.split(",") if s]
    table: dict[tuple[int, int], dict[str, float]] = {}
    kb = {}
    for w, h in sizes:
        files = [work / f"decode-{w}x{h}" / f"{k:03d}.jpg" for k in range(args.decode_files)]
        kb[(w, h)] = write_jpegs(files, w, h, seed=w)
        print(f"image_stream: decode paths at {w}x{h}", flush=True)
        table[(w, h)] = decode_rates([str(f) for f in files], args.rounds)
    paths = decode_paths()
    head = " | ".join(f"{w}x{h} ({kb[(w, h)]:.0f} KB)" for w, h in sizes)
    lines = [f"**Decode path**, one process, one thread (images/s per core; {args.decode_files} "
             f"files per size, {args.rounds} rounds, paths taking turns file by file; the "
             "code's own path in bold):",
             "", f"| view | path | {head} |", "|---|---|" + "---|" * len(sizes)]
    for name, (view, own, _) in paths.items():
        cells = " | ".join(f"{table[s][name]:,.0f}" for s in sizes)
        lines.append(f"| {view} | {f'**{name}**' if own else name} | {cells} |")
    lines.append("")
    for view in ("eval", "train"):
        names = [n for n, (v, _, _) in paths.items() if v == view]
        own = next(n for n in names if paths[n][1])
        for s in sizes:
            best = max(names, key=lambda n, s=s: table[s][n])
            lines.append(f"- fastest {view} path at {s[0]}x{s[1]}: {best}, "
                         f"{table[s][best]:,.0f} images/s, "
                         f"{table[s][best] / table[s][own]:.2f}x the code's path.")
    lines.append("")
    lines.append(f"Draft mode decodes at 1/2, 1/4 or 1/8 scale only when the short side is at "
                 f"least twice {DRAFT}: at 500x375 it decodes the full image, like PIL's plain "
                 "path. The training view (RandomResizedCrop from 8% of the area) decodes in "
                 "full.")
    return lines, table


# ----------------------------------------------------------------- 2. streamed vs ImageFolder


def start_ray(cpus: int) -> None:
    import ray

    # Ray's workers import study.streaming and sdkd_core: they inherit this environment.
    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False, logging_level="ERROR")


def streamed_epoch(loader, epoch: int) -> tuple[int, float]:
    loader.set_epoch(epoch)
    return loader_epoch(loader)


def loader_epoch(batches) -> tuple[int, float]:
    """(images, seconds) of one pass over `batches` of (images, labels)."""
    seen, start = 0, time.perf_counter()
    for x, _ in batches:
        seen += len(x)
    return seen, time.perf_counter() - start


def tree_cpu_seconds() -> dict[int, float]:
    """User + system CPU seconds of this process and of every process under it (Ray's
    daemons and workers, a DataLoader's workers), by pid."""
    import psutil

    me = psutil.Process()
    out = {}
    for proc in (me, *me.children(recursive=True)):
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def reaped_cpu_seconds() -> float:
    """CPU seconds of the children that have exited and been waited for (a DataLoader's
    workers, which start and end with each epoch)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(run) -> tuple[float, float]:
    """(images/s, images per CPU-second of the whole process tree) of `run()` -> (n, s)."""
    before, reaped = tree_cpu_seconds(), reaped_cpu_seconds()
    n, seconds = run()
    after = tree_cpu_seconds()
    cpu = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return n / seconds, n / (cpu + reaped_cpu_seconds() - reaped)


class RayDataAlone:
    """The streamed loader's Ray Data pipeline, its uint8 batches as they arrive (no
    normalisation): what the decoding workers deliver."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        ds = self.loader.dataset()
        for batch in ds.iter_torch_batches(batch_size=self.loader.batch_size, drop_last=True):
            yield batch["image"], batch["label"]


def measure_stream(args, root: Path) -> tuple[list[str], float]:
    import ray
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from study.streaming import StreamedLoader

    splits = load_dataset("imagefolder", root=root, n_train=args.images, stream=True)
    info, train = splits.info, splits.train
    print(f"image_stream: streamed loader vs ImageFolder, {len(train)} files, "
          f"{args.cpus} CPUs", flush=True)

    def folder_loader(listing):
        folder = datasets.ImageFolder(str(root / "train"), transform=transforms.Compose([
            transforms.RandomResizedCrop(info.image_size), transforms.RandomHorizontalFlip(),
            transforms.PILToTensor()]))
        folder.samples = [(str(Path(listing.root) / p), y)
                          for p, y in zip(listing.paths, listing.labels, strict=True)]
        folder.imgs, folder.targets = folder.samples, list(listing.labels)
        return DataLoader(folder, batch_size=args.batch_size, shuffle=True,
                          num_workers=args.cpus, drop_last=True)

    def streamed_loader(listing):
        return StreamedLoader(listing, info, args.batch_size, device="cpu", train=True,
                              decode_cpus=1)

    start_ray(args.cpus)
    try:
        # Warm-up on a few batches' files: Ray's start, the workers' imports, the page cache.
        few = train.subset(range(0, len(train), max(1, len(train) // (4 * args.batch_size))))
        streamed_epoch(streamed_loader(few), 0)
        loader_epoch(folder_loader(few))
        streamed, folder = streamed_loader(train), folder_loader(train)
        paths = {"streamed": lambda e: streamed_epoch(streamed, e),
                 "ray_data": lambda e: (streamed.set_epoch(e),
                                        loader_epoch(RayDataAlone(streamed)))[1],
                 "folder": lambda e: loader_epoch(folder)}  # its workers start each epoch
        rates: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
        for e in range(1, args.epochs + 1):
            for name, run in paths.items():
                rates[name].append(timed(lambda run=run, e=e: run(e)))
            print(f"  epoch {e}: " + ", ".join(f"{k} {v[-1][0]:,.0f} images/s"
                                               for k, v in rates.items()), flush=True)
    finally:
        ray.shutdown()
    wall = {k: statistics.median(r for r, _ in v) for k, v in rates.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in rates.items()}
    ratio = wall["streamed"] / wall["folder"]
    labels = {"streamed": "`StreamedLoader`: Ray Data + normalisation to float on the CPU",
              "ray_data": "its Ray Data pipeline alone (uint8 batches)",
              "folder": "torchvision `ImageFolder` + `DataLoader` (uint8 batches)"}
    lines = [f"**Streamed images/s per CPU core**: {len(train):,} generated 500x375 JPEGs, "
             f"RandomResizedCrop({info.image_size}) + flip, batch {args.batch_size}, "
             f"{args.cpus} CPUs (Ray num_cpus={args.cpus}, decode_cpus=1; DataLoader "
             f"num_workers={args.cpus}), median of {args.epochs} epochs each, interleaved, "
             "after a warm-up on a few batches. CPU-seconds: every process of the run (the "
             "driver, Ray's daemons and workers, the DataLoader's workers).", "",
             "| path | images/s | images/s per core | images per CPU-second |",
             "|---|---|---|---|"]
    for k, label in labels.items():
        lines.append(f"| {label} | {wall[k]:,.0f} | {wall[k] / args.cpus:,.0f} | "
                     f"{cpu[k]:,.0f} |")
    lines += ["", f"**Ratio streamed / ImageFolder, images/s per core: {ratio:.2f}x** "
                  f"(per CPU-second: {cpu['streamed'] / cpu['folder']:.2f}x; Ray Data alone: "
                  f"{wall['ray_data'] / wall['folder']:.2f}x per core, "
                  f"{cpu['ray_data'] / cpu['folder']:.2f}x per CPU-second). Each epoch, "
                  "images/s streamed / Ray Data alone / ImageFolder: "
              + "; ".join(" / ".join(f"{rates[k][i][0]:,.0f}" for k in labels)
                          for i in range(args.epochs)) + "."]
    return lines, ratio


# ----------------------------------------------------------------- 3. peak memory, N and 2N


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_child(args) -> None:
    """One streamed epoch over `args.rss_child[1]` files; prints the peaks as JSON."""
    import resource

    import psutil

    from study.streaming import StreamedLoader

    root, n = Path(args.rss_child[0]), int(args.rss_child[1])
    splits = load_dataset("imagefolder", root=root, n_train=n, stream=True)
    start_ray(args.cpus)
    me = psutil.Process()
    workers: dict[int, int] = {}  # Ray worker pid -> its peak RSS (KiB), kept after it exits
    total_peak, stop = 0, threading.Event()

    def sample():
        nonlocal total_peak
        while not stop.is_set():
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                    if child.name().startswith("ray::") or "default_worker" in " ".join(
                            child.cmdline()):
                        workers[child.pid] = max(workers.get(child.pid, 0),
                                                 _vm_hwm_kib(child.pid))
                except psutil.Error:
                    continue
            total_peak = max(total_peak, total)
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    loader = StreamedLoader(splits.train, splits.info, args.batch_size, device="cpu",
                            train=True, decode_cpus=1)
    seen, seconds = streamed_epoch(loader, 0)
    stop.set()
    thread.join()
    for pid in list(workers):  # the last word on each worker alive now
        workers[pid] = max(workers[pid], _vm_hwm_kib(pid))
    import ray

    ray.shutdown()
    driver_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"images": seen, "seconds": seconds, "driver_mib": driver_kib / 1024,
                      "workers_mib": sum(workers.values()) / 1024, "workers": len(workers),
                      "total_sampled_mib": total_peak / 2**20}))


def rss_of(args, root: Path, n: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(root), str(n),
           "--cpus", str(args.cpus), "--batch-size", str(args.batch_size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_rss(args, root: Path) -> tuple[list[str], float]:
    n = args.rss_images
    print(f"image_stream: peak RSS of a streamed epoch at {n} and {2 * n} images", flush=True)
    small, large = rss_of(args, root, n), rss_of(args, root, 2 * n)
    rows = (("driver (getrusage ru_maxrss)", "driver_mib"),
            ("Ray worker processes (sum of each one's VmHWM)", "workers_mib"),
            ("driver + all Ray processes (peak of the sum, sampled every 0.2 s)",
             "total_sampled_mib"))
    lines = [f"**Peak memory** of one streamed epoch (500x375 JPEGs, 224 crops, batch "
             f"{args.batch_size}, {args.cpus} CPUs), each size in a process of its own:", "",
             f"| peak RSS, MiB | N = {small['images']:,} | 2N = {large['images']:,} | 2N / N |",
             "|---|---|---|---|"]
    ratios = {}
    for label, key in rows:
        ratios[key] = large[key] / small[key]
        lines.append(f"| {label} | {small[key]:,.0f} | {large[key]:,.0f} | "
                     f"{ratios[key]:.3f} |")
    lines += ["", f"Ray worker processes counted: {small['workers']} at N, "
                  f"{large['workers']} at 2N; RSS counts the object store's shared pages in "
                  "each process that maps them. Epochs: "
                  f"{small['seconds']:.1f} s and {large['seconds']:.1f} s."]
    return lines, max(ratios["driver_mib"], ratios["workers_mib"])


# ----------------------------------------------------------------- 4. a GPU epoch


def measure_gpu(args, work: Path) -> list[str]:
    """KD and SDKD epochs, teacher -> student, streamed, or why not."""
    if not torch.cuda.is_available() and args.gpu_device == "cuda":
        return [f"**GPU epoch** ({args.teacher} -> {args.student} KD and SDKD, streamed "
                f"{args.gpu_size}x{args.gpu_size} JPEGs): not measured (no GPU)."]
    import ray

    from sdkd_core.distillers import build_distiller
    from sdkd_core.engine import Engine
    from sdkd_core.models import build_model
    from sdkd_core.recipe import Recipe
    from study.streaming import StreamedData

    root = work / "gpu"
    size = args.gpu_size
    write_folder(root, args.gpu_images, size, size, classes=args.gpu_classes, n_val_per_class=1)
    splits = load_dataset("imagefolder", root=root, stream=True, image_size=size)
    try:
        build_model(args.teacher, splits.num_classes, 3)
        build_model(args.student, splits.num_classes, 3)
    except UserError as e:
        return [f"**GPU epoch** ({args.teacher} -> {args.student}): not measured: "
                f"`build_model` on this branch rejects them ({e})."]
    print(f"image_stream: {args.teacher} -> {args.student} epochs on {args.gpu_device}",
          flush=True)
    start_ray(args.gpu_cpus)
    lines = [f"**GPU epoch**, {args.teacher} -> {args.student}, {len(splits.train):,} "
             f"generated {size}x{size} JPEGs streamed (Ray num_cpus={args.gpu_cpus}, "
             "decode_cpus=1, RandomResizedCrop + flip), "
             f"batch {args.gpu_batch_size}, second epoch timed:", "",
             "| method | images/s (training epoch) |", "|---|---|"]
    try:
        data = StreamedData(splits, decode_cpus=1)
        for method in ("kd", "sdkd"):
            torch.manual_seed(0)
            student = build_model(args.student, splits.num_classes, 3)
            teacher = build_model(args.teacher, splits.num_classes, 3)
            engine = Engine(build_distiller(method, student, teacher), data,
                            Recipe(epochs=100, batch_size=args.gpu_batch_size),
                            device=args.gpu_device)
            engine.train_epoch()  # warm-up: cuDNN, allocator, Ray's workers
            engine.epoch += 1
            rate = engine.train_epoch()["images_per_s"]
            lines.append(f"| {method} | {rate:,.0f} |")
        loader = data.loader("train", batch_size=args.gpu_batch_size, device=args.gpu_device)
        n, s = streamed_epoch(loader, 3)
        lines.append(f"| (the streamed loader alone) | {n / s:,.0f} |")
    finally:
        ray.shutdown()
    return lines


# ----------------------------------------------------------------- the benchmark


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpus", type=int, default=2,
                   help="Ray's num_cpus and the DataLoader's workers (default 2)")
    p.add_argument("--images", type=int, default=1280,
                   help="500x375 training files of the streamed/ImageFolder comparison")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs of each loader")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rss-images", type=int, default=640,
                   help="N of the peak-memory runs (N and 2N files)")
    p.add_argument("--decode-sizes", default="500x375,1200x900",
                   help="comma-separated WxH of the decode-path files")
    p.add_argument("--decode-files", type=int, default=16, help="files per decode size")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the decode-path timing")
    p.add_argument("--gpu-images", type=int, default=4096, help="224x224 files of the GPU epoch")
    p.add_argument("--gpu-classes", type=int, default=100)
    p.add_argument("--gpu-size", type=int, default=224, help="side of the GPU epoch's JPEGs")
    p.add_argument("--gpu-batch-size", type=int, default=128)
    p.add_argument("--gpu-cpus", type=int, default=os.cpu_count() or 1,
                   help="Ray's num_cpus in the GPU epoch (default: every core)")
    p.add_argument("--gpu-device", default="cuda", help=argparse.SUPPRESS)  # cpu: try the code
    p.add_argument("--teacher", default="resnet34")
    p.add_argument("--student", default="resnet18")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: "
                   "decode,stream,rss,gpu")
    p.add_argument("--rss-child", nargs=2, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def measure(args) -> Result:
    skip = set(args.skip.split(","))
    lines = [f"Machine: {machine()}; Ray and the DataLoader at {args.cpus} CPUs.", ""]
    targets = []
    with tempfile.TemporaryDirectory(prefix="image-stream-") as tmp:
        work = Path(tmp)
        if "decode" not in skip:
            part, _ = measure_decode(args, work)
            lines += part + [""]
        if not {"stream", "rss"} <= skip:
            n_files = max(args.images if "stream" not in skip else 0,
                          2 * args.rss_images if "rss" not in skip else 0)
            start = time.perf_counter()
            kb = write_folder(work / "folder", n_files, 500, 375)
            print(f"image_stream: wrote {n_files} 500x375 JPEGs ({kb:.0f} KB each) in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        if "stream" not in skip:
            part, _ = measure_stream(args, work / "folder")
            lines += part + [f"(500x375 files: {kb:.0f} KB each on average.)", ""]
        if "rss" not in skip:
            part, worst = measure_rss(args, work / "folder")
            lines += part + [""]
            targets.append(Target("streamed epoch peak RSS at 2N / at N images (worst of "
                                  "driver, Ray workers)", f"{worst:.3f}", f"<= {RSS_GOAL:.2f}",
                                  worst <= RSS_GOAL))
        if "gpu" not in skip:
            lines += measure_gpu(args, work)
    return Result("\n".join(lines).rstrip(), targets)


def main(argv=None) -> int:
    args = parse(argv)
    if args.rss_child:
        rss_child(args)
        return 0
    print(measure(args).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
