import pickle

import numpy as np
import pytest
import torch

from gradlab import data
from gradlab.config import DataSpec
from gradlab.errors import DataError


def write_cifar10(root, n_per_batch=4, seed=0):
    """Small files in the real CIFAR-10 python format (pickled dicts of uint8 rows)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": rows, "labels": labels}, f)
        batches[name] = (rows, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return batches


def test_cifar10_loads_real_format_through_torchvision(tmp_path):
    batches = write_cifar10(tmp_path)
    ds = data.load(DataSpec(name="cifar10", data_dir=str(tmp_path), download=False), verify=False)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (4, 3, 32, 32)
    assert ds.num_classes == 10
    rows, labels = batches["data_batch_1"]
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert ds.train_x[0, 1, 2, 3].item() == rows[0, 1024 + 2 * 32 + 3]
    assert ds.train_y[:4].tolist() == labels
    assert ds.augment == data.Augment(pad=4, flip=True)


def test_cifar_checksum_failure_is_a_clear_error(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match="checksum"):
        data.load(DataSpec(name="cifar10", data_dir=str(tmp_path), download=False))


def test_missing_cifar_offline_names_location_and_offline_dataset(tmp_path):
    with pytest.raises(DataError) as e:
        data.load(DataSpec(name="cifar10", data_dir=str(tmp_path), download=False))
    message = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "--dataset digits" in message and "--data-dir" in message


def test_digits_split_is_fixed_and_real():
    a = data.load(DataSpec(name="digits"))
    b = data.load(DataSpec(name="digits"))
    assert a.train_x.shape == (1437, 1, 8, 8) and a.test_x.shape == (360, 1, 8, 8)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.max().item() == 255 and set(a.train_y.tolist()) == set(range(10))


def test_val_split_holds_out_training_images():
    ds = data.load(DataSpec(name="digits", val_split=200))
    assert len(ds.val_y) == 200 and len(ds.train_y) == 1237
    with pytest.raises(DataError, match="leaves no training data"):
        data.load(DataSpec(name="digits", val_split=5000))


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match="digits"):
        data.load(DataSpec(name="imagenet22k"))


def test_synthetic_shape():
    ds = data.load(DataSpec(name="synthetic", synthetic_shape=(3, 16, 16), synthetic_size=64))
    assert ds.train_x.shape == (64, 3, 16, 16) and ds.test_x.shape == (16, 3, 16, 16)


def test_mnist_through_torchvision_raw_files(tmp_path):
    """MNIST's idx files, written by the test, read by torchvision's own parser."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def idx(path, arr, magic):
        with open(path, "wb") as f:
            f.write(magic.to_bytes(4, "big"))
            for d in arr.shape:
                f.write(int(d).to_bytes(4, "big"))
            f.write(arr.tobytes())

    for prefix, n in (("train", 6), ("t10k", 3)):
        idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 2051)
        idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,), dtype=np.uint8), 2049)
    ds = data.load(DataSpec(name="mnist", data_dir=str(tmp_path), download=False))
    assert ds.train_x.shape == (6, 1, 28, 28) and ds.test_y.shape == (3,)
