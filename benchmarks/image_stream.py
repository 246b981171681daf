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
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import Result, Target, machine
from image_decode import measure_decode, write_folder
from image_memory import loader_epoch, rss_of, start_ray, streamed_epoch

from sdkd_core.data import load_dataset
from sdkd_core.errors import UserError

RSS_GOAL = 1.10  # peak RSS at 2N images / at N




# ----------------------------------------------------------------- 2. streamed vs ImageFolder


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
    print(measure(args).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
