"""Text conditioning inside runs: the run's sentence encoder, captions per training batch, prompts for sampling.

Training draws one caption per item of each global batch from its own generator, encodes the batch once (the
encoder caches repeated prompts) and drops prompts to the null context with train.p_uncond. Sampling encodes its
prompts once, before the sampling loop, and hands every sample its row of the context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from .captions import caption_options, class_prompts, draw_captions
from .errors import ConfigError, DataError
from .text import NULL_PROMPT, SentenceEncoder, TextContext, drop_context, load_encoder

if TYPE_CHECKING:
    from .config import Config
    from .data import TensorData

MAX_PROMPT_CHARS = 4000  # far beyond the encoder's 256 tokens; longer prompts are cut (with a warning)
PREVIEW_ROWS = 8  # prompts in the preview grids written during training (8 samples each)


def run_encoder(cfg: Config, device: torch.device | str = "cpu", path: str | None = None) -> SentenceEncoder:
    """The sentence encoder a text run names (path overrides cfg.model.text_encoder), checked against context_dim."""
    encoder = load_encoder(path or cfg.model.text_encoder or None).to(device)
    if encoder.dim != cfg.model.context_dim:
        raise ConfigError(f"model.context_dim = {cfg.model.context_dim} but the text encoder {encoder.source} gives "
                          f"{encoder.dim}-dim embeddings; set model.context_dim = {encoder.dim}")
    return encoder


def encoder_meta(encoder: SentenceEncoder) -> dict[str, Any]:
    """What meta.json records about a run's encoder (the null context itself lives in the weights)."""
    return {"text_encoder": {"source": encoder.source, "dim": encoder.dim, "max_tokens": encoder.max_tokens}}


def training_options(cfg: Config, data: TensorData) -> tuple[tuple[str, ...], ...]:
    """Per item, the prompts it may be trained with, as data.captions asks."""
    if cfg.data.captions == "templates":
        if data.y is None:
            raise DataError(f"dataset {data.name} has no class labels to template prompts from")
        per_class = class_prompts(cfg.data.name).prompts("train")
        return tuple(per_class[y] for y in data.y.tolist())
    if data.captions is None:
        hint = ' or set data.captions = "templates"' if data.y is not None else ""
        raise DataError(f"dataset {data.name} has no captions for a text-conditional run; use a captioned dataset "
                        f"(emoji, a folder with .txt sidecars or metadata.jsonl){hint}")
    if not any(data.captions):
        raise DataError(f"every caption of {data.name} is empty; add .txt sidecars or a metadata.jsonl")
    return caption_options(data, "train")


def preview_prompts(options: Sequence[Sequence[str]]) -> list[str]:
    """A fixed, small list of distinct training prompts (the first option of evenly spread items)."""
    firsts = list(dict.fromkeys(o[0] for o in options if o[0]))
    if len(firsts) <= PREVIEW_ROWS:
        return firsts
    return [firsts[round(k * (len(firsts) - 1) / (PREVIEW_ROWS - 1))] for k in range(PREVIEW_ROWS)]


class CaptionBatches:
    """Each global batch's prompts: drawn per item from their own generator, encoded once, dropped with p_uncond."""

    def __init__(self, cfg: Config, data: TensorData, device: torch.device, encoder: SentenceEncoder | None = None):
        self.encoder = encoder or run_encoder(cfg, device)
        self.options = training_options(cfg, data)
        self.p_uncond = cfg.train.p_uncond
        self.generator = torch.Generator().manual_seed(cfg.train.seed + 2)
        self.preview = preview_prompts(self.options)

    def __call__(self, idx: torch.Tensor, noise_gen: torch.Generator) -> TextContext:
        """The (dropped) context of the items idx; the drop mask comes from noise_gen, like label dropout."""
        prompts = draw_captions(self.options, idx.cpu(), self.generator)
        return drop_context(self.encoder.encode(prompts), self.p_uncond, noise_gen)

    def preview_context(self, n: int) -> TextContext:
        """n contexts in len(preview) blocks: row r of an 8-wide grid shows preview prompt r."""
        return prompt_context(self.encoder, self.preview, n)


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """Prompts with runs of whitespace collapsed; an empty one is an error unless all of them are the null prompt."""
    cleaned = [" ".join(p.split()) for p in prompts]
    if any(not p for p in cleaned) and not all(not p for p in cleaned):
        raise ConfigError('an empty --prompt is the null prompt (unconditional samples) and cannot be mixed with '
                          'other prompts; give it alone (--prompt "") or remove it')
    if any(len(p) > MAX_PROMPT_CHARS for p in cleaned):
        raise ConfigError(f"a --prompt is longer than {MAX_PROMPT_CHARS} characters; shorten it")
    return cleaned


def prompt_rows(n: int, k: int) -> torch.Tensor:
    """For n samples and k prompts, each sample's prompt index: k blocks of (nearly) equal size, in order."""
    return torch.arange(n) * k // n if n >= k else torch.arange(n)


def prompt_context(encoder: SentenceEncoder, prompts: Sequence[str], n: int) -> TextContext:
    """The context of n samples in len(prompts) blocks, encoded once (one row per distinct prompt)."""
    distinct = list(dict.fromkeys(prompts))
    ctx = encoder.encode(distinct)
    which = torch.tensor([distinct.index(p) for p in prompts])[prompt_rows(n, len(prompts))]
    return ctx.select(which.to(ctx.tokens.device))


def read_prompts_file(path: str) -> list[str]:
    """One prompt per non-blank line; '#' starts a comment line."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--prompts-file {path} not found; give a text file with one prompt per line")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"--prompts-file {path} is not UTF-8 text; save it as UTF-8") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ConfigError(f"--prompts-file {path} holds no prompts; write one prompt per line")
    return prompts


_ENCODERS: dict[tuple[str, str], SentenceEncoder] = {}  # loaded once per process, per (directory, device)


def with_prompts(run: Any, prompts: Sequence[str] | None, text_encoder: str | None = None) -> Any:
    """A copy of a LoadedRun that samples with prompts (checked); None or [] keeps the run as it is."""
    import dataclasses

    if text_encoder and not run.cfg.model.context_dim:
        raise ConfigError(f"--text-encoder needs a text-conditional run; {run.path} was trained without prompts")
    if not prompts:
        return dataclasses.replace(run, text_encoder=text_encoder or run.text_encoder)
    if not run.cfg.model.context_dim:
        what = "class labels: use --class" if run.cfg.model.num_classes else "no conditioning"
        raise ConfigError(f"--prompt needs a text-conditional run; {run.path} was trained with {what} "
                          "(model.context_dim = 0)")
    run = dataclasses.replace(run, prompts=tuple(check_prompts(prompts)), text_encoder=text_encoder or run.text_encoder)
    _run_encoder(run)  # a missing or mismatched encoder fails here, before anything is sampled or written
    return run


def remember_encoder(cfg: Any, device: torch.device | str, encoder: SentenceEncoder) -> None:
    """Use an encoder already loaded (training's) for the run cfg describes, instead of loading a second copy."""
    _ENCODERS.setdefault((cfg.model.text_encoder, str(device)), encoder)


def _run_encoder(run: Any) -> SentenceEncoder:
    """The run's encoder (or its --text-encoder), loaded once per process and device."""
    key = (run.text_encoder or run.cfg.model.text_encoder, str(run.device))
    if key not in _ENCODERS:
        _ENCODERS[key] = run_encoder(run.cfg, run.device, run.text_encoder or None)
    return _ENCODERS[key]


def run_context(run: Any, n: int) -> TextContext | None:
    """The n samples' context for run.prompts (in blocks), encoded once; None without prompts (the null prompt)."""
    return prompt_context(_run_encoder(run), run.prompts, n) if run.prompts else None


__all__ = ["NULL_PROMPT", "CaptionBatches", "check_prompts", "encoder_meta", "preview_prompts", "prompt_context",
           "prompt_rows", "read_prompts_file", "remember_encoder", "run_context", "run_encoder", "training_options", "with_prompts"]
