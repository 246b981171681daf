"""Generated photo-like JPEGs and the decode-path measurement of benchmarks/image_stream.py.

Images: smooth random fields at four scales plus pixel noise, JPEG quality 90, about half a byte
per pixel (a 500x375 file is ~90 KB; ImageNet's training files average about 110 KB). The
decode paths (PIL, PIL with draft mode, torchvision's decode_jpeg; then the evaluation or the
training view) take turns file by file, one process and one torch thread: images/s per core.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdkd_core.datasets import DATASET_INFO
from sdkd_core.image_files import decode_image
from sdkd_core.image_views import eval_view, train_view

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
