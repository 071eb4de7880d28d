"""Single pictures for the edit commands and the forward figure: any PIL-readable file as a (1, C, H, W) tensor in
[-1, 1], inpainting masks, and 16/32-bit images scaled to 8 bits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

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
