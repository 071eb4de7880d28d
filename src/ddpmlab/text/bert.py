"""A BERT encoder forward (Devlin et al. 2019) in plain torch, with the Hugging Face parameter names.

Post-LN layers (Vaswani et al. 2017): h = LN(h + Attn(h)); h = LN(h + W2 GELU(W1 h)).
Shapes: ids, type_ids (B, L) long; mask (B, L) bool (True = a real token) -> hidden states (B, L, D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT config.json that the forward uses."""

    vocab_size: int
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> BertConfig:
        """Read the fields this forward needs; a KeyError or ValueError names what is missing or unsupported."""
        if table.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {table['hidden_act']!r} (only gelu is supported)")
        if table.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {table['position_embedding_type']!r} (only absolute)")
        names = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size")
        cfg = cls(**{k: int(table[k]) for k in names}, layer_norm_eps=float(table.get("layer_norm_eps", 1e-12)))
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} does not split into {cfg.num_attention_heads} heads")
        return cfg


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm (Devlin et al. 2019, Fig. 2)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self.word_embeddings(ids) + self.position_embeddings(positions)[None] + self.token_type_embeddings(type_ids)
        return self.LayerNorm(h)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class _Dense(nn.Module):
    """A linear map with an optional LayerNorm after the residual sum (HF's *Output modules)."""

    def __init__(self, d_in: int, d_out: int, eps: float | None):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(d_out, eps=eps)


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _Dense(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)


class BertLayer(nn.Module):
    """One post-LN encoder layer: multi-head self-attention, then the GELU feed-forward, each residual + LayerNorm."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.attention = _Attention(cfg)
        self.intermediate = _Dense(cfg.hidden_size, cfg.intermediate_size, None)
        self.output = _Dense(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, L, D = h.shape
        a = self.attention

        def split(lin: nn.Linear) -> torch.Tensor:
            return lin(h).reshape(B, L, self.heads, D // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(split(a.self.query), split(a.self.key), split(a.self.value),
                                             attn_mask=attn_mask)
        h = a.output.LayerNorm(h + a.output.dense(ctx.transpose(1, 2).reshape(B, L, D)))
        ff = self.output.dense(F.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(h + ff)


class _Layers(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class BertModel(nn.Module):
    """Embeddings and the encoder stack; parameter names match Hugging Face's BertModel (without the pooler)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = _Layers(cfg)

    def forward(self, ids: torch.Tensor, type_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states (B, L, D); padded keys (mask False) take no part in attention."""
        h = self.embeddings(ids, type_ids)
        attn_mask = mask[:, None, None, :]  # (B, 1, 1, L): every query sees only real tokens
        for layer in self.encoder.layer:
            h = layer(h, attn_mask)
        return h


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence-BERT mean pooling (Reimers & Gurevych 2019, Sec. 3) over real tokens, then L2 normalisation; (B, D)."""
    m = mask.to(hidden.dtype)[..., None]
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(mean, p=2, dim=1)
