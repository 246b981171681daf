"""Peak memory of one streamed epoch, measured in a process of its own (the child of
benchmarks/image_stream.py's memory part), and the Ray start and epoch helpers both use.

    python benchmarks/image_memory.py FOLDER N [--cpus 2] [--batch-size 64]

prints one JSON line: the images, the epoch's seconds, the driver's peak RSS (getrusage), the
sum of the peaks of Ray's worker processes (VmHWM) and the sampled peak of their sum, in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import ROOT

from sdkd_core.data import load_dataset


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


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_child(args) -> None:
    """One streamed epoch over `args.n` files of `args.root`; prints the peaks as JSON."""
    import resource

    import psutil

    from study.streaming import StreamedLoader

    root, n = Path(args.root), int(args.n)
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
    cmd = [sys.executable, str(Path(__file__).resolve()), str(root), str(n),
           "--cpus", str(args.cpus), "--batch-size", str(args.batch_size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="peak RSS of one streamed epoch")
    p.add_argument("root", help="an image folder (train/ and val/)")
    p.add_argument("n", type=int, help="training images of the epoch")
    p.add_argument("--cpus", type=int, default=2, help="Ray's num_cpus")
    p.add_argument("--batch-size", type=int, default=64)
    rss_child(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
