"""The `emoji` dataset: Noto Emoji artwork (64 px PNGs) with captions from emoji-datasource's emoji.json.

Source: the npm package emoji-datasource-google (pinned version and sha512 below), fetched into --data-root by
`npm pack` or over HTTPS and read offline afterwards. Each RGBA emoji is composited on white, resized to
data.image_size (32 by default), labelled by its category and captioned by its lowercased Unicode name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import DataConfig
from .data import Split, TensorData, _images
from .downloads import NpmTarball, fetch_and_extract
from .errors import DataError

PACKAGE = NpmTarball(
    "emoji-datasource-google", "16.0.0",
    "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
)
IMAGES = "img/google/64"
DEFAULT_SIZE = 32
BACKGROUND = (255, 255, 255, 255)  # white
EXCLUDED_CATEGORIES = ("Component",)  # the five skin-tone and hair swatches, not pictures
CREDIT = (
    "Emoji artwork: Noto Emoji by Google, Apache License 2.0 (https://github.com/googlefonts/noto-emoji); "
    "names and categories: emoji-datasource by Cal Henderson, MIT License (https://github.com/iamcal/emoji-data)"
)
PROVENANCE = "ddpmlab-dataset.json"  # written next to the extracted files: source, checksum, licences


def _keep(rel: str) -> bool:
    """The files the dataset reads: emoji.json, the licence and the 64 px Google PNGs."""
    return rel in ("emoji.json", "LICENSE") or (rel.startswith(IMAGES + "/") and rel.endswith(".png"))


def emoji_dir(root: str | Path) -> Path:
    """The extracted package under root/emoji/, fetched and verified on first use."""
    folder = Path(root).expanduser() / "emoji"
    provenance = {"dataset": "emoji", "source": f"npm {PACKAGE.name}@{PACKAGE.version}", "url": PACKAGE.url,
                  "integrity": PACKAGE.integrity, "licence": CREDIT}
    return fetch_and_extract(PACKAGE, folder, folder / f"{PACKAGE.name}-{PACKAGE.version}", _keep,
                             extra={PROVENANCE: json.dumps(provenance, indent=2) + "\n"})


def read_entries(folder: Path) -> list[dict]:
    """emoji.json's entries that have a Google image on disk, in the package's sort order."""
    path = folder / "emoji.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is missing or unreadable ({exc}); delete {folder} to fetch it again") from None
    if not isinstance(entries, list):
        raise DataError(f"{path} is not a list of emoji; delete {folder} to fetch it again")
    keep = [e for e in entries if isinstance(e, dict) and e.get("has_img_google") and e.get("image") and e.get("name")
            and e.get("category") not in EXCLUDED_CATEGORIES and (folder / IMAGES / e["image"]).is_file()]
    if not keep:
        raise DataError(f"{folder} holds no emoji images under {IMAGES}; delete it to fetch it again")
    return sorted(keep, key=lambda e: e.get("sort_order", 0))


def composite(path: Path, size: int) -> np.ndarray:
    """An RGBA PNG composited on the white background (Porter & Duff 'over'), resized: (size, size, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgba = im.convert("RGBA")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} could not be read as an image ({exc}); delete its folder to fetch it again") from None
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND), rgba).convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb)


def caption(entry: dict) -> str:
    """The lowercased Unicode name: 'smiling face with heart-shaped eyes'."""
    return " ".join(str(entry["name"]).lower().split())


def load_emoji(cfg: DataConfig, split: Split) -> TensorData:
    """All Noto emoji as (N, 3, S, S) in [-1, 1], labels = categories, captions = names; S = image_size or 32."""
    if split != "train":
        raise DataError("emoji has no held-out split; evaluate against the training set (split='train')")
    folder = emoji_dir(cfg.root)
    entries = read_entries(folder)
    size = cfg.image_size or DEFAULT_SIZE
    classes = tuple(sorted({e["category"] for e in entries}))
    pixels = np.stack([composite(folder / IMAGES / e["image"], size) for e in entries])
    labels = np.array([classes.index(e["category"]) for e in entries])
    data = _images(pixels, labels, classes, "emoji", 0)
    return TensorData(data.name, data.x, data.y, data.class_names, captions=tuple(caption(e) for e in entries))
