"""Captions for training a text-conditional model: folder sidecars, templated class prompts, per-step draws.

Folders: `image.png` with a sidecar `image.txt`, or `metadata.jsonl` lines {"file_name": ..., "text": ...}
(the Hugging Face ImageFolder convention; file_name relative to the metadata file's folder).
Class-labelled datasets without captions (MNIST, Fashion-MNIST, CIFAR-10) get templated prompts per class,
with held-out phrasings for evaluation. The empty caption "" is the null prompt.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

from .data import IMAGE_SUFFIXES
from .errors import DataError

if TYPE_CHECKING:
    import torch

    from .data import TensorData

METADATA = "metadata.jsonl"


# ---------------------------------------------------------------- captioned folders


def _metadata_captions(path: Path) -> dict[Path, str]:
    """{image path: text} from one metadata.jsonl; a bad line is a one-line error naming it."""
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}:{n} must be a JSON object with file_name and text; fix that line") from None
        if not isinstance(name, str) or not isinstance(text, str):
            raise DataError(f"{path}:{n}: file_name and text must be strings; fix that line")
        out[(path.parent / name).resolve()] = text
    return out


def folder_captions(root: Path, images: Sequence[Path]) -> tuple[str, ...] | None:
    """One caption per image ("" where it has none, counted in a warning); None for a folder without captions.

    A sidecar .txt or a metadata.jsonl row that names no image on disk is an error (a typo would silently
    leave an image uncaptioned).
    """
    sidecars = {p.with_suffix("").resolve(): p for p in root.rglob("*.txt") if p.is_file()}
    metadata = [p for p in root.rglob(METADATA) if p.is_file()]
    if not sidecars and not metadata:
        return None
    on_disk = {p.resolve() for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    stems = {p.with_suffix(""): p for p in on_disk}
    captions: dict[Path, str] = {}
    for stem, txt in sidecars.items():
        if stem not in stems:
            raise DataError(f"caption file {txt} matches no image ({txt.stem}.png, .jpg, ...); rename or remove it")
        captions[stems[stem]] = " ".join(txt.read_text(encoding="utf-8").split())
    for meta in metadata:
        for image, text in _metadata_captions(meta).items():
            if image not in on_disk:
                raise DataError(f"{meta} names {image.name}, which is not an image in {root}; fix or remove that line")
            if image in captions:
                raise DataError(f"{image} has a caption in both a .txt sidecar and {meta}; keep one of them")
            captions[image] = " ".join(text.split())
    out = tuple(captions.get(p.resolve(), "") for p in images)
    missing = sum(p.resolve() not in captions for p in images)
    empty = sum(1 for p, c in zip(images, out) if not c and p.resolve() in captions)
    if missing or empty:
        warnings.warn(f"{missing} of {len(images)} images in {root} have no caption and {empty} an empty one; "
                      'they train as the null prompt ""', stacklevel=3)
    return out


# ---------------------------------------------------------------- templated class prompts


@dataclass(frozen=True)
class ClassPrompts:
    """Per class, the prompts training draws from and held-out phrasings for evaluation (never trained on)."""

    train: tuple[tuple[str, ...], ...]
    eval: tuple[tuple[str, ...], ...]

    def prompts(self, split: Literal["train", "eval"] = "train") -> tuple[tuple[str, ...], ...]:
        return self.train if split == "train" else self.eval


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TRAIN = ("a handwritten {w}", "the digit {d}", "a handwritten digit {d}", "the number {w}", "{w}",
               "a handwritten {d}")
DIGIT_EVAL = ("a drawing of the number {d}", "the numeral {w} written by hand")
FASHION_NOUNS = (("a t-shirt", "a top"), ("a pair of trousers", "trousers"), ("a pullover", "a sweater"),
                 ("a dress",), ("a coat",), ("a sandal",), ("a shirt",), ("a sneaker", "a running shoe"),
                 ("a bag", "a handbag"), ("an ankle boot", "a boot"))
CIFAR_NOUNS = (("an airplane",), ("a car",), ("a bird",), ("a cat",), ("a deer",), ("a dog",), ("a frog",),
               ("a horse",), ("a ship",), ("a truck",))
OBJECT_TRAIN = ("a photo of {n}", "{n}", "a picture of {n}", "a black and white photo of {n}", "an image of {n}")
OBJECT_EVAL = ("a product photo of {n}", "a small photo showing {n}")


def _digits() -> ClassPrompts:
    fill = lambda ts, d: tuple(t.format(w=DIGIT_WORDS[d], d=d) for t in ts)  # noqa: E731
    return ClassPrompts(tuple(fill(DIGIT_TRAIN, d) for d in range(10)), tuple(fill(DIGIT_EVAL, d) for d in range(10)))


def _objects(nouns: tuple[tuple[str, ...], ...]) -> ClassPrompts:
    train = tuple(tuple(t.format(n=n) for t in OBJECT_TRAIN for n in ns) for ns in nouns)
    return ClassPrompts(train, tuple(tuple(t.format(n=ns[0]) for t in OBJECT_EVAL) for ns in nouns))


CLASS_PROMPTS = {"mnist": _digits, "mnist-5k": _digits, "fashion-mnist": lambda: _objects(FASHION_NOUNS),
                 "cifar10": lambda: _objects(CIFAR_NOUNS)}


def class_prompts(dataset: str) -> ClassPrompts:
    """The templated prompts of a class-labelled dataset (mnist, mnist-5k, fashion-mnist, cifar10)."""
    if dataset not in CLASS_PROMPTS:
        raise DataError(f"dataset {dataset} has no prompt templates; choose one of {', '.join(CLASS_PROMPTS)} "
                        "or a dataset with captions")
    return CLASS_PROMPTS[dataset]()


# ---------------------------------------------------------------- what training draws each step


def category_phrase(class_name: str) -> str:
    """'Food & Drink' -> 'food and drink'."""
    return " ".join(class_name.replace("&", "and").lower().split())


def caption_options(data: TensorData, split: Literal["train", "eval"] = "train") -> tuple[tuple[str, ...], ...]:
    """Per item, the prompts one may stand for: its caption (plus a 'category: ...' variant where it has a class),
    or its class's templates; an error for a dataset with neither."""
    if data.captions is not None:
        if data.y is None or not data.class_names:
            return tuple((c,) for c in data.captions)
        names = [category_phrase(n) for n in data.class_names]
        return tuple((c, f"{c}, category: {names[y]}") if c else (c,) for c, y in zip(data.captions, data.y.tolist()))
    if data.y is None:
        raise DataError(f"dataset {data.name} has neither captions nor class labels to make prompts from")
    per_class = class_prompts(data.name).prompts(split)
    return tuple(per_class[y] for y in data.y.tolist())


def draw_captions(
    options: Sequence[Sequence[str]], index: torch.Tensor, generator: torch.Generator | None
) -> list[str]:
    """One prompt per index, uniformly among that item's options; the draw uses generator only."""
    import torch

    u = torch.rand(len(index), generator=generator).tolist()
    return [options[i][int(r * len(options[i]))] for i, r in zip(index.tolist(), u)]
