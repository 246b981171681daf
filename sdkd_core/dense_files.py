"""Dense datasets from their files: Cityscapes, Pascal VOC 2012 and NYU Depth v2, each split
a list of (image, label map) pairs, listed once and checked (`sdkd_core.dense_decode` decodes
them into memory).

Layouts, under the folder given as `dataset.root` (docs/data.md, "Dense datasets"):

- `cityscapes`: `leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png` with
  `gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png` (the official
  leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip unzipped into one folder). The
  labelled `val` split is the test split, as every Cityscapes KD paper reports it.
- `voc`: `JPEGImages/<name>.jpg`, `SegmentationClass/<name>.png` (palette PNGs of class
  indices, 255 the void border) and `ImageSets/Segmentation/{train,val}.txt` (the folder
  VOCdevkit/VOC2012, or a folder above it). Where `SegmentationClassAug/` and
  `ImageSets/Segmentation/train_aug.txt` are there (the SBD-augmented 10,582 images), training
  reads them, as CIRKD and torchdistill do; `val.txt` with `SegmentationClass/` is the test split.
- `nyuv2`: `{train,test}/<scene>/rgb_<n>.jpg` with `sync_depth_<n>.png` beside it (16-bit,
  millimetres, 0: no depth): the official 795 / 654 split as BTS's
  extract_official_train_test_set_from_mat.py writes it (its `official_splits/` folder).

What listing checks, each one line (`UserError`): a missing root, split folder or list file,
an image without its label file, a list naming a missing image, VOC's augmented set half there
(the folder without the list or the other way round) or listing test images.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sdkd_core.errors import UserError


@dataclass(frozen=True)
class PairListing:
    """The files of one split: image paths and their label maps' paths, relative to `root`."""

    root: str
    images: tuple[str, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> PairListing:
        idx = [int(i) for i in index]
        return PairListing(self.root, tuple(self.images[i] for i in idx),
                           tuple(self.labels[i] for i in idx))


@dataclass(frozen=True)
class DenseFiles:
    """A dense dataset's two splits, listed once; `notes` say which files were chosen."""

    layout: str
    root: str
    train: PairListing
    test: PairListing
    notes: tuple[str, ...] = field(default=())

    @cached_property
    def sha256(self) -> str:
        """A hash of both splits' files: what the data is, wherever it lies (a teacher's
        cache key)."""
        listed = json.dumps([self.layout, self.train.images, self.train.labels,
                             self.test.images, self.test.labels]).encode()
        return hashlib.sha256(listed).hexdigest()


HOLDS = {
    "cityscapes": "leftImg8bit/ and gtFine/",
    "voc": "VOC 2012's JPEGImages/, SegmentationClass/ and ImageSets/ (VOCdevkit/VOC2012)",
    "nyuv2": "train/ and test/ (BTS's official_splits/)",
}


def _root(root: str | Path | None, layout: str) -> Path:
    if root is None:
        raise UserError(f"dataset {layout} needs `dataset.root` (or --data-root): the folder "
                        f"holding {HOLDS[layout]}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"data folder '{path}' does not exist; set dataset.root to the folder "
                        f"holding {HOLDS[layout]}")
    return path


def _paired(image: Path, label: Path) -> None:
    if not label.is_file():
        raise UserError(f"image '{image}' has no label file '{label}'; add the label map or "
                        "remove the image")


def _listing(path: Path, pairs: list[tuple[Path, Path]], where: Path, what: str
             ) -> PairListing:
    if not pairs:
        raise UserError(f"'{where}' holds no {what}; put the dataset's files there")
    return PairListing(str(path), tuple(os.path.relpath(i, path) for i, _ in pairs),
                       tuple(os.path.relpath(m, path) for _, m in pairs))


def _walk(folder: Path):
    """Every file under `folder`, in sorted order: (its folder, its name)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath), name


# ----------------------------------------------------------------------------- Cityscapes

CITYSCAPES_IMAGE, CITYSCAPES_LABEL = "_leftImg8bit.png", "_gtFine_labelIds.png"


def list_cityscapes(root: str | Path | None) -> DenseFiles:
    path = _root(root, "cityscapes")
    return DenseFiles("cityscapes", str(path), _cityscapes_split(path, "train"),
                      _cityscapes_split(path, "val"))


def _cityscapes_split(path: Path, split: str) -> PairListing:
    images, labels = path / "leftImg8bit" / split, path / "gtFine" / split
    for folder, archive in ((images, "leftImg8bit_trainvaltest.zip"),
                            (labels, "gtFine_trainvaltest.zip")):
        if not folder.is_dir():
            raise UserError(f"'{folder}' is missing: Cityscapes reads its {split} split from "
                            f"it (unzip {archive} into '{path}')")
    pairs = []
    for folder, name in _walk(images):
        if name.endswith(CITYSCAPES_IMAGE):
            image = folder / name
            label = (labels / folder.relative_to(images)
                     / (name[: -len(CITYSCAPES_IMAGE)] + CITYSCAPES_LABEL))
            _paired(image, label)
            pairs.append((image, label))
    return _listing(path, pairs, images, f"*{CITYSCAPES_IMAGE} images in city folders")


# ----------------------------------------------------------------------------- Pascal VOC

VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"


def list_voc(root: str | Path | None) -> DenseFiles:
    path = _voc_folder(_root(root, "voc"))
    sets = path / "ImageSets" / "Segmentation"
    aug_list, aug_maps = sets / "train_aug.txt", path / "SegmentationClassAug"
    if aug_list.is_file() != aug_maps.is_dir():
        have, lack = (aug_list, aug_maps) if aug_list.is_file() else (aug_maps, aug_list)
        raise UserError(f"'{have}' is there but '{lack}' is missing: the augmented training set "
                        f"(SBD, 10,582 images) needs both; add it, or remove '{have.name}' to "
                        "train on train.txt")
    test = _voc_split(path, sets / "val.txt", "SegmentationClass")
    if aug_list.is_file():
        train = _voc_split(path, aug_list, "SegmentationClassAug")
        names = {Path(p).stem for p in test.images}
        shared = sorted(n for n in (Path(p).stem for p in train.images) if n in names)
        if shared:
            raise UserError(f"'{aug_list}' lists {len(shared)} of val.txt's images (such as "
                            f"{shared[0]}), the test split; use the 10,582-image train_aug.txt "
                            "that leaves val out")
        note = (f"trained on the SBD-augmented set: train_aug.txt, SegmentationClassAug/ "
                f"({len(train)} images)")
    else:
        train = _voc_split(path, sets / "train.txt", "SegmentationClass")
        note = (f"trained on train.txt, SegmentationClass/ ({len(train)} images; no "
                "SegmentationClassAug/ with train_aug.txt)")
    return DenseFiles("voc", str(path), train, test, notes=(note,))


def _voc_folder(path: Path) -> Path:
    """VOC 2012's own folder: `path` or VOC2012 / VOCdevkit/VOC2012 under it."""
    for candidate in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise UserError(f"'{path / 'JPEGImages'}' is missing: set dataset.root to VOCdevkit/VOC2012 "
                    f"(extracted from {VOC_ARCHIVE})")


def _voc_split(path: Path, names: Path, maps: str) -> PairListing:
    """The images a list file names (one per line: a name, or the image's and label's paths
    as DeepLab's lists give them) with their label maps in `maps`."""
    if not names.is_file():
        raise UserError(f"'{names}' is missing: VOC's splits are read from "
                        f"ImageSets/Segmentation/ (re-extract {VOC_ARCHIVE})")
    pairs = []
    for line in names.read_text().splitlines():
        if not line.split():
            continue
        name = Path(line.split()[0]).stem
        image = path / "JPEGImages" / f"{name}.jpg"
        if not image.is_file():
            raise UserError(f"'{names}' lists {name}, but '{image}' is missing; restore the "
                            "image or remove the line")
        label = path / maps / f"{name}.png"
        _paired(image, label)
        pairs.append((image, label))
    return _listing(path, pairs, names, "image names")


# ----------------------------------------------------------------------------- NYU Depth v2

NYU_IMAGE = re.compile(r"rgb_(\w+)\.(jpg|jpeg|png)", re.IGNORECASE)


def list_nyuv2(root: str | Path | None) -> DenseFiles:
    path = _root(root, "nyuv2")
    return DenseFiles("nyuv2", str(path), _nyu_split(path, "train"), _nyu_split(path, "test"))


def _nyu_split(path: Path, split: str) -> PairListing:
    folder = path / split
    if not folder.is_dir():
        raise UserError(f"'{folder}' is missing: nyuv2 reads its {split} split from it "
                        f"({split}/<scene>/rgb_<n>.jpg with sync_depth_<n>.png, as BTS's "
                        "official_splits/ holds them)")
    pairs = []
    for where, name in _walk(folder):
        match = NYU_IMAGE.fullmatch(name)
        if match:
            image, depth = where / name, where / f"sync_depth_{match.group(1)}.png"
            _paired(image, depth)
            pairs.append((image, depth))
    return _listing(path, pairs, folder, "rgb_<n>.jpg images")


DENSE_LISTERS = {"cityscapes": list_cityscapes, "voc": list_voc, "nyuv2": list_nyuv2}
