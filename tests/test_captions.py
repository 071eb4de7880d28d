import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmlab.captions import caption_options, category_phrase, class_prompts, draw_captions
from ddpmlab.config import DataConfig
from ddpmlab.data import TensorData, load_dataset
from ddpmlab.errors import DataError


def _png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _load(root):
    return load_dataset(DataConfig(name=f"folder:{root}"))


def test_sidecar_captions_follow_the_image_order(tmp_path):
    for i, name in enumerate(["b", "a", "c"]):
        _png(tmp_path / f"{name}.png", 40 * i)
    (tmp_path / "a.txt").write_text("a red\n apple  \n")
    (tmp_path / "b.txt").write_text("a blue car")
    (tmp_path / "c.txt").write_text("   ")
    with pytest.warns(UserWarning, match="0 of 3 images .* have no caption and 1 an empty one"):
        data = _load(tmp_path)
    assert data.captions == ("a red apple", "a blue car", "")  # sorted by path like the images
    assert data.x.shape == (3, 3, 8, 8)


def test_metadata_jsonl_captions_and_missing_ones_are_counted(tmp_path):
    for name in ["one.png", "sub/two.png", "three.png"]:
        _png(tmp_path / name)
    rows = [{"file_name": "one.png", "text": "first"}, {"file_name": "sub/two.png", "text": "second"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.warns(UserWarning, match="1 of 3 images .* have no caption and 0 an empty one"):
        data = _load(tmp_path)
    assert data.captions == ("first", "second", "")  # the images sorted by path: one, sub/two, three
    assert data.y is None  # not every image sits in a subfolder: no classes


def test_folder_without_captions_is_unchanged(tmp_path):
    _png(tmp_path / "x.png")
    assert _load(tmp_path).captions is None


def test_orphan_sidecar_and_bad_metadata_are_one_line_errors(tmp_path):
    _png(tmp_path / "cat.png")
    (tmp_path / "dog.txt").write_text("a dog")
    with pytest.raises(DataError, match=r"caption file .*dog.txt matches no image"):
        _load(tmp_path)
    (tmp_path / "dog.txt").unlink()
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "cat.png", "caption": "x"}\n')
    with pytest.raises(DataError, match=r"metadata.jsonl:1 must be a JSON object with file_name and text"):
        _load(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "cow.png", "text": "x"}\n')
    with pytest.raises(DataError, match="names cow.png, which is not an image"):
        _load(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "cat.png", "text": "x"}\n')
    (tmp_path / "cat.txt").write_text("y")
    with pytest.raises(DataError, match="both a .txt sidecar and"):
        _load(tmp_path)


def test_class_templates_hold_out_eval_phrasings():
    digits = class_prompts("mnist")
    assert "a handwritten seven" in digits.train[7] and "the digit 7" in digits.train[7]
    fashion = class_prompts("fashion-mnist")
    assert "a photo of a sneaker" in fashion.train[7] and "an ankle boot" in fashion.train[9]
    for prompts in (digits, fashion, class_prompts("cifar10")):
        assert len(prompts.train) == len(prompts.eval) == 10
        for train, held_out in zip(prompts.train, prompts.eval):
            assert len(train) >= 4 and held_out and not set(train) & set(held_out)
    assert not set(digits.train[1]) & set(digits.train[7])
    with pytest.raises(DataError, match="no prompt templates"):
        class_prompts("moons")


def test_caption_options_and_draws():
    x = torch.zeros(3, 3, 4, 4)
    emoji = TensorData("emoji", x, torch.tensor([0, 1, 1]), ("Food & Drink", "Animals & Nature"),
                       captions=("red apple", "dog face", ""))
    options = caption_options(emoji)
    assert options[0] == ("red apple", "red apple, category: food and drink") and options[2] == ("",)
    mnist = TensorData("mnist", x, torch.tensor([7, 0, 7]), tuple("0123456789"))
    assert caption_options(mnist, "eval")[0] == class_prompts("mnist").eval[7]
    drawn = draw_captions(caption_options(mnist), torch.tensor([0, 2] * 50), torch.Generator().manual_seed(0))
    assert set(drawn) == set(class_prompts("mnist").train[7])  # every template of the class comes up in 100 draws
    again = draw_captions(caption_options(mnist), torch.tensor([0, 2] * 50), torch.Generator().manual_seed(0))
    assert drawn == again
    assert category_phrase("Smileys & Emotion") == "smileys and emotion"
    with pytest.raises(DataError, match="neither captions nor class labels"):
        caption_options(TensorData("folder:x", x, None))
