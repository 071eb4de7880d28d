"""The pictures a user brings to a job: a dataset's image, a run's training image or an upload, at a run's size;
and a painted mask."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from .runs import run_facts

MAX_UPLOAD_MB = 8  # the page refuses bigger uploads; jobs refuse them too (the API takes files directly)
IMAGE_FORMATS = "PNG, JPEG, BMP, GIF, WebP or TIFF"


@lru_cache(maxsize=4)
def _dataset(name: str, root: str, image_size: int):
    """An image dataset, loaded once; a DataError for a dataset of 2D points."""
    from ...config import DataConfig
    from ...data import load_dataset

    data = load_dataset(DataConfig(name=name, root=root, image_size=image_size))
    if not data.is_image:
        raise DataError(f"{name} holds 2D points, not images; pick an image dataset or upload a picture")
    return data


def dataset_image(name: str, index: int, root: str = "data", image_size: int = 0):
    """Image `index` of a dataset as (1, C, H, W) in [-1, 1], and its class name ('' if none)."""
    data = _dataset(name, root, image_size)
    if not 0 <= index < len(data.x):
        raise ConfigError(f"{name} has {len(data.x)} images; pick an index in [0, {len(data.x) - 1}]")
    label = "" if data.y is None or not data.class_names else data.class_names[int(data.y[index])]
    return data.x[index : index + 1], label


def run_dataset_image(path: str | Path, index: int):
    """Image `index` of the data a run was trained on, at the run's image size."""
    from ... import checkpoint as ckpt

    d = ckpt.read_config(path).data
    return dataset_image(d.name, index, d.root, d.image_size)


def uploaded_picture(file: str | Path, size: int = 0, channels: int = 0):
    """An uploaded picture as (1, C, H, W) in [-1, 1], checked for size and format first."""
    from ...pictures import load_picture

    path = Path(file)
    if path.stat().st_size > MAX_UPLOAD_MB * 1024 * 1024:
        raise DataError(f"{path.name} is {path.stat().st_size / 2**20:.1f} MB; upload a picture under "
                        f"{MAX_UPLOAD_MB} MB")
    try:
        return load_picture(path, size=size, channels=channels)
    except DataError:
        raise DataError(f"{path.name} is not an image; upload a {IMAGE_FORMATS} file") from None


def picture_for_run(path: str | Path, x):
    """A picture resized and converted to what the run's network takes: (1, C, H, W)."""
    import torch.nn.functional as F

    c, h, w = run_facts(path).item_shape
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True) if c == 1 else x.expand(-1, c, -1, -1) if x.shape[1] == 1 else x[:, :c]
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="area")
    return x


def mask_from_strokes(strokes: np.ndarray, size: tuple[int, int]):
    """A painted layer (H', W', 4) uint8 (alpha > 0 where painted) as a (1, 1, H, W) mask at the run's size."""
    import torch
    import torch.nn.functional as F

    alpha = torch.from_numpy((strokes[..., -1] > 0).astype(np.float32))[None, None]
    return (F.interpolate(alpha, size=size, mode="area") > 0).float()
