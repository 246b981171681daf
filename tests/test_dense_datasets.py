"""The dense datasets from their files (Cityscapes, Pascal VOC 2012, NYUv2), each on tiny files
written in its real layout: shapes, labels (train ids, void, metres), the views, the augmented
VOC set, the study's dataset section, and every bad input as one line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import run_cases_in_folders
from PIL import Image

from sdkd_core.data import ImageData, load_dataset
from sdkd_core.errors import UserError
from sdkd_core.tasks import IGNORE
from study.sections import DatasetSection

# cityscapesScripts' labels.py, written out: the evaluated label ids in train-id order.
EVALUATED_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def train_ids(raw: np.ndarray) -> np.ndarray:
    out = np.full(raw.shape, IGNORE, dtype=np.uint8)
    for train_id, label_id in enumerate(EVALUATED_IDS):
        out[raw == label_id] = train_id
    return out


def rgb(seed: int, w: int, h: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------ the layouts, written


def cityscapes_ids(seed: int, w: int = 64, h: int = 32) -> np.ndarray:
    """Raw label ids 0-33, with id 26 (car) at (0, 0) and id 0 (unlabeled) at (0, 1)."""
    raw = np.random.default_rng(seed).integers(0, 34, (h, w), dtype=np.uint8)
    raw[0, 0], raw[0, 1] = 26, 0
    return raw


def write_cityscapes(root, w=64, h=32):
    """train: 3 images in two cities; val: 2 in one. Returns {(split, name): (image, ids)}."""
    files = {}
    for split, cities in (("train", {"aachen": 2, "bochum": 1}), ("val", {"frankfurt": 2})):
        for city, count in cities.items():
            for i in range(count):
                name = f"{city}_000000_{i:06d}"
                seed = len(files)
                image, raw = rgb(seed, w, h), cityscapes_ids(seed, w, h)
                for folder, suffix, arr in (("leftImg8bit", "leftImg8bit", image),
                                            ("gtFine", "gtFine_labelIds", raw)):
                    (root / folder / split / city).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr).save(root / folder / split / city
                                              / f"{name}_{suffix}.png")
                (root / "gtFine" / split / city / f"{name}_gtFine_color.png").write_bytes(b"")
                files[split, name] = image, raw
    return root


def voc_map(w: int, h: int, value: int, mode: str = "P") -> Image.Image:
    """A class map of `value` inside a void (255) border two pixels wide, with a patch of
    background (0) at the top left."""
    arr = np.full((h, w), value, dtype=np.uint8)
    arr[2:6, 2:6] = 0
    arr[:2, :], arr[-2:, :], arr[:, :2], arr[:, -2:] = IGNORE, IGNORE, IGNORE, IGNORE
    img = Image.fromarray(arr, "L")
    if mode == "P":
        img = img.convert("P")
        img.putpalette([c for i in range(256) for c in (i * 7 % 256, i * 3 % 256, i)])
    return img


VOC_SIZES = {"2007_000032": (40, 30), "2007_000039": (30, 40), "2007_000063": (32, 32),
             "2008_000002": (40, 30), "2008_000003": (32, 24)}


def write_voc(root, aug=False):
    """train.txt: 2 images, val.txt: 2; with `aug`, train_aug.txt lists 3 (the train ones and
    one more) whose SegmentationClassAug maps (grayscale, as SBD's) hold class 5."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for k, (name, (w, h)) in enumerate(VOC_SIZES.items()):
        Image.fromarray(rgb(k, w, h)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        voc_map(w, h, 1 + k).save(root / "SegmentationClass" / f"{name}.png")
    names = list(VOC_SIZES)
    sets = root / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (sets / "val.txt").write_text("\n".join(names[2:4]) + "\n")
    if aug:
        (root / "SegmentationClassAug").mkdir()
        for name in (*names[:2], names[4]):
            voc_map(*VOC_SIZES[name], 5, mode="L").save(root / "SegmentationClassAug"
                                                        / f"{name}.png")
        # DeepLab's list format: the image's and the map's paths.
        (sets / "train_aug.txt").write_text("".join(
            f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n"
            for n in (*names[:2], names[4])))
    return root


def depth_mm(seed: int, w: int = 64, h: int = 48) -> np.ndarray:
    """16-bit depths in millimetres: 1234 at (0, 0), 0 (no depth) at (0, 1)."""
    mm = np.random.default_rng(seed).integers(500, 10000, (h, w)).astype(np.uint16)
    mm[0, 0], mm[0, 1] = 1234, 0
    return mm


def write_nyu(root):
    """train: 3 pairs in two scenes (one grayscale JPEG, one CMYK); test: 2."""
    files = {}
    for split, scenes in (("train", {"bedroom": 2, "kitchen": 1}), ("test", {"office": 2})):
        for scene, count in scenes.items():
            folder = root / split / scene
            folder.mkdir(parents=True)
            for i in range(count):
                seed = len(files)
                image = Image.fromarray(rgb(seed, 64, 48))
                if (split, scene, i) == ("train", "bedroom", 1):
                    image = image.convert("L")
                if (split, scene) == ("train", "kitchen"):
                    image = image.convert("CMYK")
                image.save(folder / f"rgb_{seed:05d}.jpg", quality=95)
                Image.fromarray(depth_mm(seed)).save(folder / f"sync_depth_{seed:05d}.png")
                files[split, seed] = depth_mm(seed)
    (root / "train" / "bedroom" / "README.txt").write_text("not a pair\n")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("dense")
    return {"cityscapes": write_cityscapes(base / "cityscapes"),
            "voc": write_voc(base / "voc"), "voc_aug": write_voc(base / "voc_aug", aug=True),
            "nyuv2": write_nyu(base / "nyuv2")}


# ------------------------------------------------------------------ what loads


def test_cityscapes_maps_label_ids_to_the_19_train_ids(folders):
    data = load_dataset("cityscapes", root=folders["cityscapes"], image_size=32)
    assert isinstance(data, ImageData) and data.num_classes == 19
    assert data.train_x.shape == (3, 3, 32, 64) and data.train_x.dtype == torch.uint8
    assert data.train_y.shape == (3, 32, 64) and data.train_y.dtype == torch.uint8
    assert data.test_x.shape == (2, 3, 32, 64) and data.test_y.shape == (2, 32, 64)
    # Listed in sorted order (aachen's two, then bochum's): seeds 0, 1, 2; val: 3, 4.
    for split, y, x, seeds in (("train", data.train_y, data.train_x, (0, 1, 2)),
                               ("val", data.test_y, data.test_x, (3, 4))):
        for k, seed in enumerate(seeds):
            assert np.array_equal(y[k].numpy(), train_ids(cityscapes_ids(seed))), split
            assert np.array_equal(x[k].numpy(), rgb(seed, 64, 32).transpose(2, 0, 1))
    assert int(data.train_y[0, 0, 0]) == 13 and int(data.train_y[0, 0, 1]) == IGNORE
    assert data.skipped == 0 and data.info.view_shape == (32, 64)


def test_a_smaller_view_resizes_maps_by_nearest_neighbour(folders):
    data = load_dataset("cityscapes", root=folders["cityscapes"], image_size=16)
    assert data.train_x.shape == (3, 3, 16, 32) and data.train_y.shape == (3, 16, 32)
    allowed = set(range(19)) | {IGNORE}
    assert set(data.train_y.unique().tolist()) <= allowed  # no blended class ids
    # Halved by nearest neighbour: each view pixel is the map's pixel at its centre.
    assert np.array_equal(data.train_y[0].numpy(), train_ids(cityscapes_ids(0))[1::2, 1::2])


def test_voc_keeps_classes_and_void_and_pads_each_image_into_a_square_view(folders):
    data = load_dataset("voc", root=folders["voc"], image_size=20)
    assert data.num_classes == 21 and data.train_x.shape == (2, 3, 20, 20)
    assert data.train_y.dtype == torch.uint8 and data.test_y.shape == (2, 20, 20)
    wide, tall = data.train_y[0], data.train_y[1]  # 40x30 -> 20x15, 30x40 -> 15x20
    assert (wide[15:] == IGNORE).all() and (data.train_x[0, :, 15:] == 0).all()
    assert (tall[:, 15:] == IGNORE).all() and (data.train_x[1, :, :, 15:] == 0).all()
    assert set(wide[:15].unique().tolist()) == {0, 1, IGNORE}  # class 1, background, void
    assert (wide[0] == IGNORE).all() and (wide[:15, 0] == IGNORE).all()  # the void border
    assert any("train.txt" in note for note in data.notes)


def test_voc_trains_on_the_augmented_set_when_it_is_there(folders):
    data = load_dataset("voc", root=folders["voc_aug"], image_size=20)
    assert len(data.train_y) == 3 and len(data.test_y) == 2
    assert set(data.train_y.unique().tolist()) == {0, 5, IGNORE}  # SegmentationClassAug's
    assert set(data.test_y.unique().tolist()) <= {0, 3, 4, IGNORE}  # SegmentationClass's
    assert any("train_aug.txt" in note for note in data.notes)


def test_nyuv2_depths_are_metres_with_0_invalid_and_odd_jpegs_are_rgb(folders):
    data = load_dataset("nyuv2", root=folders["nyuv2"], image_size=48)
    assert data.num_classes == 1 and data.info.view_shape == (48, 64)
    assert data.train_x.shape == (3, 3, 48, 64) and data.train_x.dtype == torch.uint8
    assert data.train_y.shape == (3, 48, 64) and data.train_y.dtype == torch.float32
    assert data.test_y.shape == (2, 48, 64) and data.skipped == 0
    for k in range(3):
        expected = depth_mm(k).astype(np.float32) / 1000
        assert torch.allclose(data.train_y[k], torch.from_numpy(expected))
    assert float(data.train_y[0, 0, 0]) == pytest.approx(1.234) and data.train_y[0, 0, 1] == 0
    gray = data.train_x[1].float()  # the grayscale JPEG: three equal channels
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert data.train_x[2].float().std() > 10  # the CMYK JPEG decoded, not blank


def test_an_undecodable_file_is_skipped_with_its_pair_and_counted(folders, tmp_path):
    root = shutil.copytree(folders["voc"], tmp_path / "voc")
    (root / "JPEGImages" / "2007_000039.jpg").write_bytes(b"\xff\xd8 no JPEG" * 20)
    data = load_dataset("voc", root=root, image_size=20)
    assert (len(data.train_y), len(data.train_x), data.skipped) == (1, 1, 1)


def test_subsets_and_validation_draw_whole_pairs(folders):
    data = load_dataset("cityscapes", root=folders["cityscapes"], image_size=16,
                        val_split=1, n_train=1, n_test=1, seed=3)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (1, 1, 1)
    assert not torch.equal(data.train_x[0], data.val_x[0])
    again = load_dataset("cityscapes", root=folders["cityscapes"], image_size=16,
                         val_split=1, n_train=1, n_test=1, seed=3)
    assert torch.equal(again.train_y, data.train_y) and torch.equal(again.val_y, data.val_y)


def test_training_batches_keep_the_views_shape(folders):
    data = load_dataset("cityscapes", root=folders["cityscapes"], image_size=16)
    x, y = next(iter(data.loader("train", batch_size=3)))
    assert x.shape == (3, 3, 16, 32) and x.dtype == torch.float32 and y.shape == (3, 16, 32)
    assert set(y.unique().tolist()) <= set(range(19)) | {IGNORE}
    depth = load_dataset("nyuv2", root=folders["nyuv2"], image_size=24)
    x, y = next(iter(depth.loader("train", batch_size=3)))
    assert x.shape == (3, 3, 24, 32) and y.dtype == torch.float32 and (y >= 0).all()


def test_the_studys_dataset_section_lists_and_loads_them(folders):
    section = DatasetSection(name="nyuv2", root=str(folders["nyuv2"]), image_size=24)
    info = section.info()
    assert (info.n_train, info.n_test, info.view_shape) == (3, 2, (24, 32))
    assert "files_sha256" in section.fingerprint()
    assert DatasetSection(name="voc").info(listed=False).n_train == 10582  # no files read
    data = section.load(seed=0)
    assert isinstance(data, ImageData) and data.train_y.shape == (3, 24, 32)


# ------------------------------------------------------------------ bad inputs, one line each


def _copy(folders, name, tmp_path):
    return shutil.copytree(folders[name], tmp_path / name)


def _label(root, split="train"):
    return sorted((root / "gtFine" / split).rglob("*_labelIds.png"))[0]


def _no_label(root):
    _label(root).unlink()


def _wrong_size(root):
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(_label(root))


def _raw_id_40(root):
    raw = cityscapes_ids(0)
    raw[5, 7] = 40
    Image.fromarray(raw).save(_label(root))


def _no_val_labels(root):
    shutil.rmtree(root / "gtFine" / "val")


def _voc_class_30(root):
    voc_map(40, 30, 30).save(root / "SegmentationClass" / "2007_000032.png")


def _voc_rgb_map(root):
    voc_map(40, 30, 1).convert("RGB").save(root / "SegmentationClass" / "2007_000032.png")


def _voc_no_val_list(root):
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()


def _voc_half_augmented(root):
    (root / "SegmentationClassAug").mkdir()


def _voc_missing_image(root):
    (root / "JPEGImages" / "2007_000039.jpg").unlink()


def _voc_aug_lists_val(root):
    with open(root / "ImageSets" / "Segmentation" / "train_aug.txt", "a") as f:
        f.write("2007_000063\n")
    voc_map(32, 32, 5, "L").save(root / "SegmentationClassAug" / "2007_000063.png")


def _nyu_blank_depth(root):
    Image.fromarray(np.zeros((48, 64), np.uint16)).save(
        root / "train" / "bedroom" / "sync_depth_00000.png")


def _nyu_8bit_depth(root):
    Image.fromarray(np.full((48, 64), 3, np.uint8)).save(
        root / "train" / "bedroom" / "sync_depth_00000.png")


def _nyu_no_test(root):
    shutil.rmtree(root / "test")


BAD = [
    ("cityscapes", _no_label, {}, "has no label file"),
    ("cityscapes", _wrong_size, {}, "is 32x16 but its image"),
    ("cityscapes", _raw_id_40, {}, "holds label id 40, outside Cityscapes' table"),
    ("cityscapes", _no_val_labels, {}, "gtFine/val' is missing"),
    ("cityscapes", None, {"stream": True}, "not built for dense datasets"),
    ("cityscapes", None, {"crop": "pad"}, "crop applies to classification"),
    ("cityscapes", None, {"image_size": 20000}, "over the in-memory limit"),
    ("voc", _voc_class_30, {}, "holds class 30; VOC's classes are 0-20"),
    ("voc", _voc_rgb_map, {}, "has PIL mode RGB"),
    ("voc", _voc_no_val_list, {}, "val.txt' is missing"),
    ("voc", _voc_half_augmented, {}, "train_aug.txt' is missing"),
    ("voc", _voc_missing_image, {}, "lists 2007_000039, but"),
    ("voc_aug", _voc_aug_lists_val, {}, "lists 1 of val.txt's images"),
    ("nyuv2", _nyu_blank_depth, {}, "has no valid pixel"),
    ("nyuv2", _nyu_8bit_depth, {}, "has PIL mode L;"),
    ("nyuv2", _nyu_no_test, {}, "test' is missing"),
]


@pytest.mark.parametrize("name, spoil, options, fragment", BAD,
                         ids=[f"{b[0]}-{b[3][:24]}" for b in BAD])
def test_each_bad_input_is_one_clear_line(folders, tmp_path, name, spoil, options, fragment):
    root = _copy(folders, name, tmp_path)
    if spoil is not None:
        spoil(root)
    dataset = name.removesuffix("_aug")
    with pytest.raises(UserError) as err:
        load_dataset(dataset, root=root, **{"image_size": 16, **options})
    message = str(err.value)
    assert fragment in message and "\n" not in message, message


def test_a_missing_root_says_what_it_should_hold(tmp_path):
    for name in ("cityscapes", "voc", "nyuv2"):
        with pytest.raises(UserError, match="needs `dataset.root`"):
            load_dataset(name)
        with pytest.raises(UserError, match="does not exist"):
            load_dataset(name, root=tmp_path / "nowhere")


def test_the_memory_limit_names_the_size_and_an_image_size_that_fits(folders):
    with pytest.raises(UserError) as err:
        load_dataset("cityscapes", root=folders["cityscapes"], image_size=20000)
    message = str(err.value)
    assert "3 training images at 20000x40000 take 8.9 GiB" in message
    fit = int(message.split("set image_size to ")[1].split()[0])
    assert 3 * fit * 2 * fit * 4 <= 4 << 30 < 3 * (fit + 1) * 2 * (fit + 1) * 4


def test_bad_dense_files_stop_the_cli_with_one_line(folders, tmp_path_factory):
    spoiled = {}
    for name, spoil in (("cityscapes", _raw_id_40), ("nyuv2", _nyu_no_test),
                        ("voc", _voc_no_val_list)):
        spoiled[name] = shutil.copytree(folders[name], tmp_path_factory.mktemp("bad") / name)
        spoil(spoiled[name])
    cases = [(["cityscapes", "3"], "holds label id 40"),
             (["nyuv2", "3"], "test' is missing"),
             (["voc", "2"], "val.txt' is missing")]
    runs = run_cases_in_folders(
        tmp_path_factory, "study.distill", cases,
        lambda folder, args: ["--dataset", args[0], "--data-root", str(spoiled[args[0]]),
                              "--image-size", "16", "--n-train", args[1], "--epochs", "1",
                              "--device", "cpu", "--cache-dir", str(folder / "cache"),
                              "--output", str(folder / "out")])
    for i, (folder, result) in runs.items():
        assert result.returncode == 2, (i, result.stdout[-500:], result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and cases[i][1] in lines[0], (i, result.stderr)
        assert not (folder / "out").exists()
