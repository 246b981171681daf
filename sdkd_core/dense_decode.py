"""Dense datasets' files into memory: each image and its label map decoded, checked, turned
into training labels and fitted into the dataset's view.

- Labels. Cityscapes' label ids become its 19 train ids by cityscapesScripts' table (labels.py,
  CIRKD's `id_to_trainid`): ids 7, 8, 11, 12, 13, 17, 19-28, 31, 32, 33 are train ids 0-18,
  the other ids 0-33 are `IGNORE`. VOC's PNGs hold the class (0 background, 1-20) or 255
  (void), kept as they are. NYUv2's 16-bit depths in millimetres become metres (float32), 0
  staying "no depth".
- Views. `image_size` is the views' height, the dataset's `aspect` their width over height
  (Cityscapes 2:1, NYUv2 4:3, VOC square). Each image is resized to fit the view keeping its
  aspect ratio (images bilinear and antialiased, maps nearest: no invented classes or depths),
  placed at the top left, and the rest padded (image 0, class map `IGNORE`, depth 0), as CIRKD
  pads its crops: the padding is never scored.
- Checks, each one line (`UserError`) before training: a map whose size differs from its
  image's, a class outside the dataset's (a raw Cityscapes id outside its table; a VOC value
  above 20 other than 255), a depth map with no valid pixel, a map of the wrong kind (a colour
  PNG, an 8-bit depth). A file PIL cannot decode is skipped with its pair and counted, as for
  the classification files; a CMYK or grayscale JPEG decodes to RGB.
- Memory. The decoded training images and maps must fit the in-memory limit
  (`MEMORY_LIMIT_BYTES`): dense data is not streamed yet, so a larger set is one line naming
  its size and the largest `image_size` that fits.
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from sdkd_core.datasets import DatasetInfo
from sdkd_core.dense_files import DenseFiles, PairListing
from sdkd_core.errors import UserError
from sdkd_core.file_data import MEMORY_LIMIT_BYTES
from sdkd_core.image_files import decode_image
from sdkd_core.tasks import IGNORE

# cityscapesScripts' labels.py: label id -> train id for the 19 evaluated classes.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                        23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_IDS = 34  # label ids 0-33 are in the table; the others are not Cityscapes labels
_TRAIN_ID = np.full(256, -1, dtype=np.int16)  # -1: outside the table
_TRAIN_ID[:CITYSCAPES_IDS] = IGNORE
for _id, _train in CITYSCAPES_TRAIN_IDS.items():
    _TRAIN_ID[_id] = _train
VOC_CLASSES = 21
DEPTH_SCALE = 1000.0  # NYUv2's PNGs hold millimetres

CLASS_MODES = ("L", "P")  # 8-bit class indices: grayscale or palette
DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16-bit (or 32-bit) integer PNGs


def _cityscapes(label: np.ndarray, path: str) -> np.ndarray:
    train = _TRAIN_ID[label]
    if (train < 0).any():
        raise UserError(f"label map '{path}' holds label id {int(label[train < 0].min())}, "
                        f"outside Cityscapes' table (ids 0-{CITYSCAPES_IDS - 1}); give the "
                        "gtFine *_labelIds.png files as cityscapesScripts writes them")
    return train.astype(np.uint8)


def _voc(label: np.ndarray, path: str) -> np.ndarray:
    bad = (label >= VOC_CLASSES) & (label != IGNORE)
    if bad.any():
        raise UserError(f"label map '{path}' holds class {int(label[bad].min())}; VOC's classes "
                        f"are 0-{VOC_CLASSES - 1} (0: background) and {IGNORE} (void); give "
                        "the PNGs of class indices (SegmentationClass/, SegmentationClassAug/)")
    return label


def _nyu(depth: np.ndarray, path: str) -> np.ndarray:
    if not (depth > 0).any():
        raise UserError(f"depth map '{path}' has no valid pixel (all 0); remove the pair or "
                        "extract it again")
    return (depth / DEPTH_SCALE).astype(np.float32)


# Per layout: the modes its maps may have, what they hold, and their training labels.
LABELS = {
    "cityscapes": (CLASS_MODES, "8-bit label ids (gtFine *_labelIds.png)", _cityscapes),
    "voc": (CLASS_MODES, "class indices as palette or 8-bit grayscale PNGs", _voc),
    "nyuv2": (DEPTH_MODES, "depths as 16-bit PNGs in millimetres (sync_depth_*.png)", _nyu),
}


def read_map(path: str, layout: str) -> np.ndarray | None:
    """The label map at `path` as training labels [H, W] (uint8 classes or float32 depths);
    None when PIL cannot decode it."""
    modes, holds, convert = LABELS[layout]
    try:
        with Image.open(path) as img:
            img.load()
            mode, values = img.mode, np.asarray(img) if img.mode in modes else None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    if values is None:
        raise UserError(f"label map '{path}' has PIL mode {mode}; {layout}'s maps hold {holds}")
    return convert(values, path)


def _resized(arr: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    if arr.shape[1::-1] == size:
        return arr
    squeeze = arr.ndim == 3 and arr.shape[2] == 1
    out = np.asarray(Image.fromarray(arr[..., 0] if squeeze else arr).resize(size, resample))
    return out[..., None] if squeeze else out


def fit_view(image: np.ndarray, label: np.ndarray, info: DatasetInfo
             ) -> tuple[np.ndarray, np.ndarray]:
    """Image [H, W, C] and map [H, W] fitted into the view, top left, the rest padded:
    ([C, h, w] uint8, [h, w])."""
    vh, vw = info.view_shape
    h, w = label.shape
    scale = min(vh / h, vw / w)
    size = (min(vw, max(1, round(w * scale))), min(vh, max(1, round(h * scale))))
    fill = 0 if info.task == "depth" else IGNORE
    out = np.zeros((image.shape[2], vh, vw), dtype=np.uint8)
    out[:, :size[1], :size[0]] = _resized(image, size, Image.BILINEAR).transpose(2, 0, 1)
    labels = np.full((vh, vw), fill, dtype=label.dtype)
    labels[:size[1], :size[0]] = _resized(label, size, Image.NEAREST)
    return out, labels


def decode_pair(root: str, image_path: str, label_path: str, info: DatasetInfo
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """One pair's views, checked; None when either file cannot be decoded."""
    image_file, label_file = os.path.join(root, image_path), os.path.join(root, label_path)
    image = decode_image(image_file, info.in_channels)
    label = read_map(label_file, info.layout)
    if image is None or label is None:
        return None
    if label.shape != image.shape[:2]:
        raise UserError(f"label map '{label_file}' is {label.shape[1]}x{label.shape[0]} but "
                        f"its image '{image_file}' is {image.shape[1]}x{image.shape[0]}; each "
                        "map must have its image's size")
    return fit_view(image, label, info)


def decode_pairs(listing: PairListing, info: DatasetInfo, threads: int | None = None
                 ) -> tuple[Tensor, Tensor, int]:
    """Every pair of `listing` decoded on threads (PIL releases the GIL while it decodes) into
    arrays made once: (uint8 images [N, C, h, w], maps [N, h, w], pairs skipped)."""
    threads = threads or min(8, os.cpu_count() or 1)
    chunk = 64
    n, (h, w) = len(listing), info.view_shape
    x = np.zeros((n, info.in_channels, h, w), dtype=np.uint8)
    y = np.zeros((n, h, w), dtype=np.float32 if info.task == "depth" else np.uint8)
    ok = np.zeros(n, dtype=bool)

    def part(start: int) -> None:
        for k in range(start, min(start + chunk, n)):
            views = decode_pair(listing.root, listing.images[k], listing.labels[k], info)
            if views is not None:
                x[k], y[k] = views
                ok[k] = True

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(part, range(0, n, chunk)))  # the first error of the listing's order
    images, maps = torch.from_numpy(x), torch.from_numpy(y)
    skipped = int((~ok).sum())
    if skipped:
        mask = torch.from_numpy(ok)
        images, maps = images[mask].contiguous(), maps[mask].contiguous()
    return images, maps, skipped


def dense_bytes(info: DatasetInfo, n: int, image_size: int | None = None) -> int:
    """What n decoded images and their maps take in memory."""
    h = image_size or info.image_size
    w = round(h * info.aspect)
    return n * h * w * (info.in_channels + (4 if info.task == "depth" else 1))


def check_fits(name: str, info: DatasetInfo, n: int) -> None:
    """The training images fit the in-memory limit, or one line says what to lower."""
    size = dense_bytes(info, n)
    if size <= MEMORY_LIMIT_BYTES:
        return
    fit = math.isqrt(MEMORY_LIMIT_BYTES // max(1, dense_bytes(info, n, 1))) + 1
    while fit > 1 and dense_bytes(info, n, fit) > MEMORY_LIMIT_BYTES:
        fit -= 1
    h, w = info.view_shape
    raise UserError(f"{name}'s {n} training images at {h}x{w} take {size / 2**30:.1f} GiB "
                    f"decoded with their maps, over the in-memory limit of "
                    f"{MEMORY_LIMIT_BYTES / 2**30:g} GiB (dense datasets are not streamed yet); "
                    f"set image_size to {fit} or less, or take fewer images (n_train)")


def dense_info(base: DatasetInfo, files: DenseFiles | None, image_size: int | None = None,
               crop: str | None = None, pad: int | None = None) -> DatasetInfo:
    """The dataset's info with its split sizes from the files (None: the table's) and the
    view height asked; a classification crop or padding is refused."""
    for key, value in (("crop", crop), ("pad", pad)):
        if value is not None:
            lo, hi = base.scale
            raise UserError(f"{key} applies to classification image files; {base.layout} "
                            f"trains on a random scale ({lo:g}-{hi:g}), crop and flip of each "
                            f"image with its map; remove {key}")
    info = base
    if files is not None:
        info = dataclasses.replace(info, n_train=len(files.train), n_test=len(files.test))
    if image_size is not None:
        info = dataclasses.replace(info, image_size=image_size)
    return info
