import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab import data as D
from ddpmlab.config import DataConfig
from ddpmlab.errors import DataError


def write_idx(path, array: np.ndarray, gz: bool):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(blob)


def tiny_mnist(folder, n=12, gz=True, split="train"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28))
    labels = np.arange(n) % 10
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


def test_mnist_5k_is_the_real_offline_subset():
    ds = D.load_dataset(DataConfig(name="mnist-5k"))
    assert ds.x.shape == (5000, 1, 28, 28)
    assert ds.x.min() == -1.0 and ds.x.max() == 1.0
    assert ds.y.shape == (5000,) and set(ds.y.tolist()) == set(range(10))
    assert ds.num_classes == 10
    # real digits: mostly background, a sizeable share of ink
    ink = (ds.x > 0).float().mean().item()
    assert 0.1 < ink < 0.3


def test_fashion_mnist_reads_debian_idx_files(tmp_path, monkeypatch):
    images, labels = tiny_mnist(tmp_path, gz=True)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", tmp_path)
    ds = D.load_dataset(DataConfig(name="fashion-mnist"))
    assert ds.x.shape == (12, 1, 28, 28)
    assert torch.equal(ds.y, torch.as_tensor(labels))
    assert torch.allclose(ds.x[3, 0], torch.as_tensor(images[3]).float() / 127.5 - 1)
    assert ds.class_names[9] == "Ankle boot"


def test_truncated_idx_is_a_clear_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((4, 28, 28)), gz=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        D.read_idx(path)


def test_mnist_loads_through_torchvision_from_local_raw_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = tiny_mnist(raw, gz=False, split="train")
    tiny_mnist(raw, n=5, gz=False, split="test")
    ds = D.load_dataset(DataConfig(name="mnist", root=str(tmp_path), image_size=32))
    assert ds.x.shape == (12, 1, 32, 32)
    assert torch.equal(ds.y, torch.as_tensor(labels))
    test = D.load_dataset(DataConfig(name="mnist", root=str(tmp_path)), "test")
    assert test.x.shape == (5, 1, 28, 28)


def test_cifar10_loads_a_tiny_pickle_batch(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", 3) for i in range(1, 6)], ("test_batch", 2)]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(D.CIFAR_CLASSES)}, f)
    import torchvision.datasets.cifar as cifar

    # our tiny files cannot have the official md5 sums
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    ds = D.load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    assert ds.x.shape == (15, 3, 32, 32) and ds.x.dtype == torch.float32
    assert -1 <= ds.x.min() and ds.x.max() <= 1
    assert ds.num_classes == 10


def test_offline_download_is_a_one_line_data_error(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens: fails at once
    with pytest.raises(DataError) as err:
        D.load_dataset(DataConfig(name="mnist", root=str(tmp_path)))
    msg = str(err.value)
    assert "mnist-5k" in msg and "--data-root" in msg and "\n" not in msg


def test_folder_keeps_grayscale_and_skips_corrupt_files(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 20), 60 * i, np.uint8), mode="L").save(tmp_path / f"g{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = D.load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=16))
    assert ds.x.shape == (3, 1, 16, 16)
    assert ds.y is None


def test_folder_rgb_with_class_subfolders(tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.jpg")
    ds = D.load_dataset(DataConfig(name=f"folder:{tmp_path}", image_size=16))
    assert ds.x.shape == (4, 3, 16, 16)
    assert ds.class_names == ("cats", "dogs") and ds.y.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("setup,match", [
    (lambda p: None, "holds no images"),
    (lambda p: (p / "a.png").write_bytes(b"junk"), "none of the 1 files .* could be read as an image"),
])
def test_folder_errors(tmp_path, setup, match):
    setup(tmp_path)
    with pytest.raises(DataError, match=match):
        D.load_dataset(DataConfig(name=f"folder:{tmp_path}"))


def test_missing_folder_and_unknown_name():
    with pytest.raises(DataError, match="does not exist"):
        D.load_dataset(DataConfig(name="folder:/no/such/dir"))
    with pytest.raises(DataError, match="mnist-5k"):
        D.load_dataset(DataConfig(name="imagenet"))


@pytest.mark.parametrize("name", D.TOYS)
def test_toys_are_2d_and_reproducible(name):
    a = D.load_dataset(DataConfig(name=name, n_points=500))
    b = D.load_dataset(DataConfig(name=name, n_points=500))
    assert a.x.shape == (500, 2) and torch.equal(a.x, b.x)
    assert a.x.abs().max() < 4


def test_16_bit_png_is_scaled_not_clipped_and_warns_nothing(tmp_path):
    import warnings

    ramp = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)  # 0 .. 65280
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    Image.fromarray((ramp >> 8).astype(np.uint8), mode="L").save(tmp_path / "flat.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = D.load_dataset(DataConfig(name=f"folder:{tmp_path}"))
        pic = D.load_picture(tmp_path / "deep.png")
    assert ds.x.shape == (2, 1, 16, 16)
    assert torch.allclose(ds.x[0], ds.x[1], atol=2 / 255)  # the 16-bit file reads as its 8-bit twin
    assert torch.allclose(pic[0], ds.x[1], atol=2 / 255)
    assert (ds.x[0] > 0.99).float().mean() < 0.01  # PIL's convert("L") alone would clip 99% of it to white
