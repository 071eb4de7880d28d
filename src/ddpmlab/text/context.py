"""Encoded prompts as one batch: token embeddings with their padding mask, the pooled sentence vector, null rows.

Shapes: tokens (B, L, D) float, mask (B, L) bool (True = a real token, False = padding), pooled (B, D) unit norm,
null (B,) bool. The null prompt is the empty string "": its rows are flagged in `null`, and a text-conditional
network replaces them by its learned null context (the text analogue of the null class label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:
    import torch

NULL_PROMPT = ""


@dataclass(frozen=True)
class TextContext:
    """A batch of encoded prompts; `null` marks rows the network must replace by its learned null context."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    null: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def null_mask(self) -> torch.Tensor:
        """(B,) bool: True where the prompt is dropped or is the null prompt."""
        import torch

        if self.null is None:
            return torch.zeros(len(self), dtype=torch.bool, device=self.tokens.device)
        return self.null

    def to(self, device: torch.device | str) -> TextContext:
        return TextContext(self.tokens.to(device), self.mask.to(device), self.pooled.to(device),
                           None if self.null is None else self.null.to(device))

    def select(self, index: torch.Tensor | slice) -> TextContext:
        """The rows at index (a slice, an index tensor or a boolean mask)."""
        return TextContext(self.tokens[index], self.mask[index], self.pooled[index],
                           None if self.null is None else self.null[index])

    def dropped(self, drop: torch.Tensor) -> TextContext:
        """The same prompts with rows where drop (B,) bool is True turned into the null context."""
        return TextContext(self.tokens, self.mask, self.pooled, self.null_mask | drop.to(self.tokens.device))

    @staticmethod
    def cat(parts: Sequence[TextContext]) -> TextContext:
        """Concatenate along the batch, padding every part's tokens to the longest (classifier-free guidance)."""
        import torch
        import torch.nn.functional as F

        L = max(p.tokens.shape[1] for p in parts)
        tokens = torch.cat([F.pad(p.tokens, (0, 0, 0, L - p.tokens.shape[1])) for p in parts])
        mask = torch.cat([F.pad(p.mask, (0, L - p.mask.shape[1])) for p in parts])
        return TextContext(tokens, mask, torch.cat([p.pooled for p in parts]), torch.cat([p.null_mask for p in parts]))


ContextLike = Union[TextContext, "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"]


def as_context(context: ContextLike) -> TextContext:
    """A TextContext, or a tuple (tokens (B, L, D), mask (B, L), pooled (B, D)) made into one."""
    if isinstance(context, TextContext):
        return context
    if isinstance(context, (tuple, list)) and len(context) == 3:
        tokens, mask, pooled = context
        return TextContext(tokens, mask.bool(), pooled)
    raise TypeError(f"context must be a TextContext or (tokens, mask, pooled); got {type(context).__name__}")


def drop_context(context: TextContext, p_uncond: float, generator: torch.Generator | None) -> TextContext:
    """Replace each prompt by the null context with probability p_uncond (Ho & Salimans 2022, Alg. 1 line 3)."""
    import torch

    if p_uncond <= 0:
        return context
    drop = torch.rand(len(context), generator=generator, device=context.tokens.device) < p_uncond
    return context.dropped(drop)
