"""Readers of the real datasets' files: Fashion-MNIST's IDX files and CIFAR through torchvision.

Each reader returns (train_x, train_y, test_x, test_y) as uint8 images [N, C, H, W] and int64
labels; `sdkd_core.data.load_dataset` picks the reader and takes subsets.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import struct
from pathlib import Path

import torch
from torch import Tensor

from sdkd_core.errors import UserError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def default_data_root() -> Path:
    return Path(os.environ.get("SDKD_DATA", Path.home() / ".cache" / "sdkd" / "data"))


def read_idx(path: Path) -> Tensor:
    """Read an IDX file of unsigned bytes (gzipped or not) into a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read '{path}' ({err}); reinstall or re-download it") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise UserError(f"'{path}' is not an IDX file of bytes; reinstall or re-download it")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(torch.tensor(dims).prod()):
        raise UserError(f"'{path}' is truncated or corrupted; reinstall or re-download it")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _find_idx(folder: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST IDX files in `folder` (or torchvision's layout under it)."""
    for base in (folder, folder / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in FASHION_MNIST_FILES.items():
            for candidate in (base / stem, base / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FASHION_MNIST_FILES):
            return found
    return None


def read_fashion_mnist(name: str, root, download: bool):
    folders = [Path(root)] if root is not None else [DEBIAN_FASHION_MNIST, default_data_root()]
    for folder in folders:
        files = _find_idx(folder)
        if files:
            x = {k: read_idx(p) for k, p in files.items()}
            return (
                x["train_x"].unsqueeze(1),
                x["train_y"].long(),
                x["test_x"].unsqueeze(1),
                x["test_y"].long(),
            )
    reason = "downloading was not allowed"
    if root is not None:  # checked at once: no slow download attempt into the user's folder
        reason = "a given data folder is used as it is (leave it out to download)"
    elif download:
        target = default_data_root()
        # What a failed download leaves behind (folders, partial archives) is removed again.
        leftovers = [p for p in (target / "FashionMNIST", target, *target.parents)
                     if not p.exists()]
        try:
            # torchvision.datasets adds 1.4 s to every import of sdkd_core.data (each trial's
            # process): only when a download is needed.
            from torchvision.datasets import FashionMNIST

            train = FashionMNIST(str(target), train=True, download=True)
            test = FashionMNIST(str(target), train=False, download=True)
            return (
                train.data.unsqueeze(1),
                train.targets.long(),
                test.data.unsqueeze(1),
                test.targets.long(),
            )
        except Exception as err:  # noqa: BLE001 - any download failure means the same to the user
            reason = f"torchvision could not download it ({type(err).__name__})"
            if leftovers:
                shutil.rmtree(leftovers[0], ignore_errors=True)
            for folder in leftovers[1:]:
                with contextlib.suppress(OSError):
                    folder.rmdir()
    looked = ", ".join(str(f) for f in folders)
    raise UserError(
        f"Fashion-MNIST not found in {looked} and {reason}: install the Debian package "
        "(apt-get install dataset-fashion-mnist), pass --data-root to a folder with its IDX "
        "files, or run once online so torchvision downloads it"
    )


def read_cifar(name: str, root, download: bool):
    from torchvision.datasets import CIFAR10, CIFAR100  # 1.4 s: only when CIFAR is read

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    target = str(root if root is not None else default_data_root())
    try:
        splits = [cls(target, train=t, download=False) for t in (True, False)]
    except RuntimeError:
        if not download:
            raise UserError(
                f"{name} not found in '{target}'; pass --data-root or allow downloading"
            ) from None
        try:
            splits = [cls(target, train=t, download=True) for t in (True, False)]
        except Exception as err:  # noqa: BLE001
            raise UserError(
                f"{name} not found in '{target}' and torchvision could not download it "
                f"({type(err).__name__}): run once online, or pass --data-root to a folder "
                "holding the extracted python version of the dataset"
            ) from None
    out = []
    for split in splits:
        out.append(torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous())
        out.append(torch.tensor(split.targets, dtype=torch.long))
    return tuple(out)

