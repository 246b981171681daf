"""One decoded image file to the uint8 view a batch holds: the evaluation view (resize + centre
crop) and the training view (random crop, as the dataset's recipe says, and flip).

Both paths of a file dataset use these: the in-memory path decodes every file once into its
evaluation view (then pads, crops and flips batches on the device, like CIFAR); the streamed
path runs `decode_views` in Ray Data's workers every epoch. Each image's randomness comes from
(seed, epoch, index) alone, so a view does not depend on which worker made it or when.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from sdkd_core.datasets import DatasetInfo
from sdkd_core.image_files import ImageListing, decode_image

RESIZED_SCALE, RESIZED_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop


def _resize(arr: np.ndarray, size: tuple[int, int], box=None) -> np.ndarray:
    """Bilinear resize (antialiased, as torchvision's PIL path) of uint8 [H, W, C] to (w, h)."""
    img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    out = np.asarray(img.resize(size, Image.BILINEAR, box=box))
    return out[..., None] if out.ndim == 2 else out


def eval_view(arr: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """Resize the short side to image_size / eval_crop, centre-crop image_size: [C, S, S]."""
    s = info.image_size
    short = round(s / info.eval_crop)
    h, w = arr.shape[:2]
    if min(h, w) != short:
        scale = short / min(h, w)
        arr = _resize(arr, (max(s, round(w * scale)), max(s, round(h * scale))))
    top, left = (arr.shape[0] - s) // 2, (arr.shape[1] - s) // 2
    arr = arr[top:top + s, left:left + s]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def resized_crop_box(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom): torchvision's ten tries at a random
    area (8-100%) and aspect ratio (3/4-4/3), then the centre crop at the nearest ratio."""
    area = h * w
    log_ratio = (math.log(RESIZED_RATIO[0]), math.log(RESIZED_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*RESIZED_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return left, top, left + cw, top + ch
    ratio = w / h
    if ratio < RESIZED_RATIO[0]:
        cw, ch = w, round(w / RESIZED_RATIO[0])
    elif ratio > RESIZED_RATIO[1]:
        ch, cw = h, round(h * RESIZED_RATIO[1])
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return left, top, left + cw, top + ch


def train_view(arr: np.ndarray, info: DatasetInfo, rng: np.random.Generator) -> np.ndarray:
    """The dataset's training crop and a horizontal flip: [C, S, S]."""
    s = info.image_size
    if info.crop == "resized":
        out = _resize(arr, (s, s), box=resized_crop_box(*arr.shape[:2], rng)).transpose(2, 0, 1)
    else:  # pad with the background (0), then a random crop: the in-memory loader's recipe
        out = eval_view(arr, info)
        p = info.pad
        if p:
            dy, dx = rng.integers(0, 2 * p + 1, size=2)
            out = np.pad(out, ((0, 0), (p, p), (p, p)))[:, dy:dy + s, dx:dx + s]
    if info.flip and rng.random() < 0.5:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def decode_views(root: str, paths: Sequence[str], indices: Sequence[int], info: DatasetInfo,
                 train: bool, seed: int = 0, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decode and view each file: (uint8 images [B, C, S, S], a bool mask of those decoded).
    An image that cannot be decoded is zeros with mask False (the caller drops and counts it).
    `indices` are the images' positions in their split: with (seed, epoch) they fix its view."""
    s, c = info.image_size, info.in_channels
    out = np.zeros((len(paths), c, s, s), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    # JPEG draft mode may decode at half, quarter... scale; never below what the view needs.
    draft = None if train and info.crop == "resized" else math.ceil(s / info.eval_crop)
    for k, (path, index) in enumerate(zip(paths, indices, strict=True)):
        arr = decode_image(os.path.join(root, path), c, draft)
        if arr is None:
            continue
        if train:
            rng = np.random.default_rng([seed, epoch, int(index)])
            out[k] = train_view(arr, info, rng)
        else:
            out[k] = eval_view(arr, info)
        ok[k] = True
    return out, ok


def decode_batch(batch: dict[str, np.ndarray], root: str, info: DatasetInfo, train: bool,
                 seed: int, epoch: int) -> dict[str, np.ndarray]:
    """A Ray Data batch of files (path, label, index) to its views and a mask of the decoded:
    what the streamed path's decoding tasks run."""
    images, ok = decode_views(root, list(batch["path"]), batch["index"], info, train, seed,
                              epoch)
    return {"image": images, "label": batch["label"], "index": batch["index"], "ok": ok}


def load_views(listing: ImageListing, info: DatasetInfo, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Every file of `listing` as its evaluation view (the in-memory path), decoded on
    threads (PIL releases the GIL while it decodes): (images, mask of those decoded)."""
    threads = threads or min(8, os.cpu_count() or 1)
    chunk = 256
    starts = range(0, len(listing), chunk)

    def part(start: int):
        idx = range(start, min(start + chunk, len(listing)))
        return decode_views(listing.root, listing.paths[start:idx.stop], idx, info, False)

    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(part, starts))
    if not parts:
        s = info.image_size
        return np.zeros((0, info.in_channels, s, s), np.uint8), np.zeros(0, bool)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
