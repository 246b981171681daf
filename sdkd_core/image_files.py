"""Datasets of image files: list them once, check them, and decode one image at a time.

Three layouts (each split a list of files and labels, `ImageListing`):

- `imagefolder`, a researcher's own images: `root/train/<class>/*` and `root/val/<class>/*`
  (or `root/test/<class>/*`), the layout torchvision's `ImageFolder` reads;
- `imagenet` (ILSVRC-2012): the same layout, `root/train/<wnid>/*.JPEG` and
  `root/val/<wnid>/*.JPEG` (docs/data.md says how to get there from the official archives);
- `tiny_imagenet`: its own layout, `root/train/<wnid>/images/*.JPEG` and `root/val/images/*`
  labelled by `root/val/val_annotations.txt` (the labelled val split is the test set).

What is checked before training, and how odd files are treated (one rule, docs/data.md):
a missing or empty root, a class folder with no images, and train/test splits with different
classes are one clear line each (`UserError`). Files are images by their extension; any other
file (a README, `.DS_Store`) is left out and counted. What PIL can decode is decoded whatever
its name says (a PNG named .JPEG, a CMYK or grayscale JPEG all become RGB, or L for
one-channel sets). A file that cannot be decoded (corrupt, truncated) is skipped where it is
read and counted in the run's record (`files_skipped`): ImageNet's 1.3 million files are not
opened twice before training to find the few odd ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sdkd_core.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
FILE_LAYOUTS = ("imagefolder", "imagenet", "tiny_imagenet")
TEST_FOLDERS = ("val", "test")  # where a folder dataset's evaluation split lives, in order


@dataclass(frozen=True)
class ImageListing:
    """The files of one split: paths (relative to `root`) and their class indices."""

    root: str
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    ignored: int = 0  # files left out because they are not images (by extension)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index) -> ImageListing:
        idx = [int(i) for i in index]
        return ImageListing(self.root, tuple(self.paths[i] for i in idx),
                            tuple(self.labels[i] for i in idx), self.ignored)


@dataclass(frozen=True)
class FileDataset:
    """A file dataset's classes and its two splits, listed once."""

    layout: str
    root: str
    classes: tuple[str, ...]
    train: ImageListing
    test: ImageListing
    notes: tuple[str, ...] = field(default=())

    @property
    def ignored(self) -> int:
        return self.train.ignored + self.test.ignored

    @cached_property
    def sha256(self) -> str:
        """A hash of the classes and both splits' files: what the images are, wherever they
        lie (a teacher's cache key). Hashed once: ImageNet's listing takes a second."""
        listed = json.dumps([self.classes, self.train.paths, self.train.labels,
                             self.test.paths, self.test.labels]).encode()
        return hashlib.sha256(listed).hexdigest()


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _check_root(root: str | Path | None, layout: str) -> Path:
    if root is None:
        raise UserError(f"dataset {layout} needs `dataset.root` (or --data-root): the folder "
                        "holding its train/ and val/ folders")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"data folder '{path}' does not exist; set dataset.root to the folder "
                        f"holding {layout}'s train/ and val/ folders")
    if not any(path.iterdir()):
        raise UserError(f"data folder '{path}' is empty; put {layout}'s train/ and val/ "
                        "folders in it")
    return path


def _class_folders(split: Path, what: str) -> list[str]:
    if not split.is_dir():
        raise UserError(f"'{split}' is missing: {what} needs it, holding one folder per class")
    classes = sorted(e.name for e in os.scandir(split) if e.is_dir())
    if not classes:
        raise UserError(f"'{split}' has no class folders: put each class's images in a "
                        "folder of its own (train/<class>/image.jpg)")
    return classes


def _list_class_folders(split: Path, classes: list[str], sub: str = "") -> ImageListing:
    """Every image under split/<class>/<sub>, recursively, in sorted order."""
    paths, labels, ignored = [], [], 0
    for label, name in enumerate(classes):
        folder = split / name / sub
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for f in sorted(filenames):
                if is_image_name(f):
                    found.append(os.path.relpath(os.path.join(dirpath, f), split.parent))
                else:
                    ignored += 1
        if not found:
            raise UserError(f"class folder '{folder}' has no images ({', '.join(IMAGE_EXTENSIONS)}"
                            "); add images to it or remove the folder")
        paths += found
        labels += [label] * len(found)
    return ImageListing(str(split.parent), tuple(paths), tuple(labels), ignored)


def _same_classes(train: list[str], test: list[str], test_dir: Path) -> None:
    if train == test:
        return
    only_train = sorted(set(train) - set(test))
    only_test = sorted(set(test) - set(train))
    parts = []
    if only_train:
        parts.append(f"only in train/: {', '.join(only_train[:5])}"
                     + (f" and {len(only_train) - 5} more" if len(only_train) > 5 else ""))
    if only_test:
        parts.append(f"only in {test_dir.name}/: {', '.join(only_test[:5])}"
                     + (f" and {len(only_test) - 5} more" if len(only_test) > 5 else ""))
    raise UserError(f"train/ and {test_dir.name}/ have different classes ({'; '.join(parts)}); "
                    "give both the same class folders")


def list_image_folder(root: str | Path | None, layout: str = "imagefolder") -> FileDataset:
    """`root/train/<class>/*` and `root/val/<class>/*` (or test/): ImageFolder's layout."""
    path = _check_root(root, layout)
    classes = _class_folders(path / "train", layout)
    test_dir = next((path / t for t in TEST_FOLDERS if (path / t).is_dir()), None)
    if test_dir is None:
        raise UserError(f"'{path}' has train/ but neither val/ nor test/: {layout} evaluates "
                        "on one of them, holding the same class folders as train/")
    _same_classes(classes, _class_folders(test_dir, layout), test_dir)
    return FileDataset(layout, str(path), tuple(classes),
                       _list_class_folders(path / "train", classes),
                       _list_class_folders(test_dir, classes))


def list_tiny_imagenet(root: str | Path | None, layout: str = "tiny_imagenet") -> FileDataset:
    """Tiny-ImageNet as distributed: train/<wnid>/images/*.JPEG, val/images/*.JPEG and
    val/val_annotations.txt (file, wnid, box); the labelled val split is the test set."""
    path = _check_root(root, layout)
    classes = _class_folders(path / "train", layout)
    train = _list_class_folders(path / "train", classes, sub="images")
    notes = path / "val" / "val_annotations.txt"
    if not notes.is_file():
        raise UserError(f"'{notes}' is missing: Tiny-ImageNet's val labels are read from it "
                        "(re-extract tiny-imagenet-200.zip)")
    index = {c: i for i, c in enumerate(classes)}
    paths, labels, unknown = [], [], set()
    for line_no, line in enumerate(notes.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise UserError(f"'{notes}' line {line_no} is not 'file<TAB>wnid...'; re-extract "
                            "tiny-imagenet-200.zip")
        if parts[1] not in index:
            unknown.add(parts[1])
            continue
        if (path / "val" / "images" / parts[0]).is_file():
            paths.append(os.path.join("val", "images", parts[0]))
            labels.append(index[parts[1]])
    if unknown:
        raise UserError(f"'{notes}' names classes train/ lacks ({', '.join(sorted(unknown)[:5])}"
                        "); give train/ and val/ the same classes")
    if not paths:
        raise UserError(f"no image of '{notes}' exists under '{path / 'val' / 'images'}'")
    test = ImageListing(str(path), tuple(paths), tuple(labels))
    return FileDataset(layout, str(path), tuple(classes), train, test)


LISTERS = {"imagefolder": list_image_folder, "imagenet": list_image_folder,
           "tiny_imagenet": list_tiny_imagenet}


def list_dataset(layout: str, root: str | Path | None) -> FileDataset:
    return LISTERS[layout](root, layout)


# ----------------------------------------------------------------- decoding, one image


def decode_image(path: str, channels: int = 3, draft_size: int | None = None) -> np.ndarray | None:
    """The image at `path` as uint8 [H, W, C], or None when it cannot be decoded.

    PIL reads a file by its content, not its name (a PNG named .JPEG decodes as a PNG). A JPEG
    larger than `draft_size` on its short side is decoded at a reduced scale (JPEG draft mode,
    a power of two no smaller than draft_size): most of ImageNet's decoding cost goes there.
    CMYK, grayscale and palette images are converted to RGB (or L for one channel)."""
    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as img:
            if draft_size and img.format == "JPEG":
                w, h = img.size
                scale = min(w, h) / draft_size
                if scale >= 2:
                    img.draft(mode, (int(w / scale), int(h / scale)))
            img.load()  # a truncated file fails here, not later in a worker's batch
            return _converted(img, mode)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def _converted(img: Image.Image, mode: str) -> np.ndarray:
    out = np.asarray(img.convert(mode))
    return out[..., None] if out.ndim == 2 else out
