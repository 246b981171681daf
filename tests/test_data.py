import hashlib
import pickle

import numpy as np
import pytest
import torch

from sdkd_core.data import load_dataset, stratified_indices
from sdkd_core.datasets import DATASET_INFO
from sdkd_core.errors import UserError
from sdkd_core.loader import BatchLoader, augment_batch


def test_fashion_mnist_is_the_real_dataset():
    data = load_dataset("fashion_mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (10000, 1, 28, 28)
    assert torch.equal(data.train_y.bincount(), torch.full((10,), 6000))
    assert torch.equal(data.test_y.bincount(), torch.full((10,), 1000))
    # Mean pixel of the real training set, the constant the normalisation uses.
    mean = data.train_x.float().mean().item() / 255
    assert abs(mean - DATASET_INFO["fashion_mnist"].mean[0]) < 1e-3


def test_stratified_subsets_keep_class_balance_and_depend_on_seed(fmnist_small):
    assert torch.equal(fmnist_small.train_y.bincount(), torch.full((10,), 200))
    assert torch.equal(fmnist_small.test_y.bincount(), torch.full((10,), 100))
    again = load_dataset("fashion_mnist", n_train=2000, n_test=1000, seed=0)
    other = load_dataset("fashion_mnist", n_train=2000, n_test=1000, seed=1)
    assert torch.equal(again.train_x, fmnist_small.train_x)
    assert not torch.equal(other.train_x, fmnist_small.train_x)


def test_stratified_indices_hit_exact_size_with_uneven_classes():
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1)
    idx = stratified_indices(labels, 5, seed=3)
    assert len(idx) == 5 and len(set(idx.tolist())) == 5
    assert labels[idx].bincount(minlength=3).tolist() in ([4, 1, 0], [3, 1, 1], [4, 0, 1])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"name": "fashion-mnist"}, "did you mean 'fashion_mnist'"),
        ({"name": "fashion_mnist", "root": "/no/such/folder"}, "does not exist"),
        ({"name": "fashion_mnist", "n_train": 70000}, "larger than the 60000"),
        ({"name": "synthetic", "n_test": 0}, "must be a positive"),
    ],
)
def test_bad_input_is_one_clear_line(kwargs, fragment):
    with pytest.raises(UserError) as err:
        load_dataset(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_missing_fashion_mnist_names_every_way_to_get_it(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("fashion_mnist", root=tmp_path, download=False)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-root" in message and "online" in message


def test_truncated_idx_file_is_reported(tmp_path):
    src = "/usr/share/datasets/fashion-mnist/"
    import gzip
    import shutil

    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(src + name + ".gz", tmp_path / (name + ".gz"))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz") as f:
        raw = f.read()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw[:-10])
    with pytest.raises(UserError, match="truncated or corrupted"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_augment_without_pad_or_flip_is_identity():
    x = torch.randint(0, 256, (8, 3, 6, 5), dtype=torch.uint8)
    out = augment_batch(x, 0, False, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_augment_flip_is_per_image():
    x = torch.randint(0, 256, (64, 1, 6, 5), dtype=torch.uint8)
    out = augment_batch(x, 0, True, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert bool((flipped | same).all())
    assert 10 < int(flipped.sum()) < 54  # about half, each image its own coin


def test_augment_crop_pads_with_background_before_normalising():
    pad = 2
    x = torch.randint(1, 256, (64, 2, 7, 7), dtype=torch.uint8)  # no zero pixels of its own
    out = augment_batch(x, pad, False, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    offsets = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(out[i], padded[i, :, dy:dy + 7, dx:dx + 7])]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # each image its own crop
    # The borders the crop exposes are exactly the uint8 background, 0.
    assert int((out == 0).sum()) > 0


def test_loader_is_deterministic_per_seed_and_epoch(synthetic):
    def batches(seed, epoch):
        loader = BatchLoader(synthetic.train_x, synthetic.train_y, synthetic.info, 100,
                             train=True, seed=seed)
        loader.set_epoch(epoch)
        return list(loader)

    a, b, c, d = batches(0, 0), batches(0, 0), batches(0, 1), batches(1, 0)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2)
               for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0]) and not torch.equal(a[0][0], d[0][0])
    assert a[0][0].dtype == torch.float32 and a[0][0].shape == (100, 1, 28, 28)


def test_loader_normalises_background_to_the_datasets_zero(synthetic):
    info = synthetic.info
    x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    loader = BatchLoader(x, torch.zeros(4, dtype=torch.long), info, 4)
    (batch, _), = list(loader)
    assert torch.allclose(batch, torch.full_like(batch, -info.mean[0] / info.std[0]))


def test_rank_shards_are_disjoint_and_even(synthetic):
    n = len(synthetic.train_y)

    def seen(rank, world, train):
        loader = BatchLoader(torch.arange(n).view(n, 1, 1, 1).to(torch.uint8).repeat(1, 1, 1, 1),
                             synthetic.train_y, synthetic.info, 7, train=train, seed=3,
                             rank=rank, world_size=world)
        return loader.epoch_indices().tolist(), len(loader)

    # Training: equal shares of whole batches (the last partial batch dropped on every rank).
    (r0, len0), (r1, len1) = seen(0, 2, True), seen(1, 2, True)
    assert not set(r0) & set(r1) and len0 == len1 == (n // 2) // 7
    assert len(r0) == len(r1) == len0 * 7
    e = [seen(r, 3, False)[0] for r in range(3)]
    assert sorted(sum(e, [])) == list(range(n))  # evaluation covers every test image once


def _write_fake_cifar100(folder, n_train=50, n_test=20):
    base = folder / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name, n):
        labels = [i % 100 for i in range(n)]
        payload = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   "fine_labels": labels, "coarse_labels": [0] * n}
        (base / name).write_bytes(pickle.dumps(payload))
        return payload

    train, test = dump("train", n_train), dump("test", n_test)
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in base.iterdir()}
    return train, test, md5


def test_cifar100_through_torchvision_on_generated_files(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    train, test, md5 = _write_fake_cifar100(tmp_path)
    # Generated files have their own checksums; torchvision still verifies them.
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5["meta"]})
    data = load_dataset("cifar100", root=tmp_path, download=False)
    assert data.train_x.shape == (50, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    # CHW layout: channel 0 of image 0 is the first 1024 bytes of the row.
    assert torch.equal(data.train_x[0, 0].flatten(), torch.from_numpy(train["data"][0, :1024]))
    assert data.train_y.tolist() == train["fine_labels"] and data.num_classes == 100
    loader = BatchLoader(data.train_x, data.train_y, data.info, 16, train=True)
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 32, 32)


def test_cifar_missing_offline_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="cifar10 not found"):
        load_dataset("cifar10", root=tmp_path, download=False)
