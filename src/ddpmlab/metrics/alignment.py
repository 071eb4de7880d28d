"""Prompt alignment of a text run's samples, per guidance weight, with a ceiling from real images and a floor.

Templated datasets (mnist, mnist-5k, fashion-mnist): each held-out phrasing ("a drawing of the number 7") is
sampled; the shipped classifier judges whether the sample shows the prompt's class.
    acc      mean(classifier(x) == class(prompt)) over the samples; per class as well
    ceiling  the classifier's accuracy on real held-out images of each class
    floor    1 / K (chance), and the samples scored against shuffled prompts
Captioned datasets (emoji): retrieval. For a generated image x with prompt p_i among P eval prompts:
    nn(x)    its k nearest training images (pixel distance)
    s_j      mean cosine similarity between the captions of nn(x) and prompt p_j, in the sentence encoder
    rank     1 + #{j : s_j > s_i}; reported as top-1, top-5 and mean reciprocal rank (MRR)
    ceiling  real images: the training image of each prompt, itself excluded from its neighbours
    floor    the same samples scored against shuffled prompts (chance MRR ~ H_P / P)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

import torch

from ..captions import caption_options, class_prompts
from ..errors import ConfigError

TEMPLATED = {"mnist": "mnist", "mnist-5k": "mnist", "fashion-mnist": "fashion-mnist"}  # dataset -> classifier
NEIGHBOURS = 5
EVAL_PROMPTS = 32  # emoji prompts scored: evenly spread over the dataset's captions


def eval_prompts(run: Any, split: Literal["train", "eval"] = "eval") -> tuple[list[str], list[int]]:
    """The prompts to score and, per prompt, its class (templated datasets) or its item index (captioned)."""
    name = run.cfg.data.name
    if run.cfg.data.captions == "templates":
        per_class = class_prompts(name).prompts(split)
        pairs = [(p, c) for c, ps in enumerate(per_class) for p in ps]
        return [p for p, _ in pairs], [c for _, c in pairs]
    from ..data import load_dataset

    data = load_dataset(run.cfg.data, "train")
    if data.captions is None:
        raise ConfigError(f"{run.path} was trained on {name}, which has no captions or templates to score")
    firsts = [o[0] for o in caption_options(data, "train")]
    items = [i for i, c in enumerate(firsts) if c and firsts.index(c) == i]  # distinct, non-empty captions
    m = min(EVAL_PROMPTS, len(items))
    pick = [items[round(k * (len(items) - 1) / max(1, m - 1))] for k in range(m)]
    return [firsts[i] for i in pick], pick


def _guided(run: Any, w: float) -> Any:
    return dataclasses.replace(run, cfg=dataclasses.replace(run.cfg, sample=dataclasses.replace(run.cfg.sample,
                                                                                                  guidance=w)))


def _classify(name: str, images: torch.Tensor) -> torch.Tensor:
    from .features import load_classifier

    net, _ = load_classifier(name)
    with torch.no_grad():
        return torch.cat([net(b.float()).argmax(1) for b in images.split(500)])


def class_alignment(run: Any, weights: Sequence[float], per_prompt: int, split: str = "eval") -> dict[str, Any]:
    """Classifier accuracy against the prompt's class, per guidance weight, with real-image ceiling and floors."""
    from ..data import load_dataset
    from ..sampling import sample

    if run.cfg.data.name not in TEMPLATED or run.cfg.data.captions != "templates":
        raise ConfigError(f"{run.path} was not trained on templated prompts of mnist or fashion-mnist")
    prompts, classes = eval_prompts(run, split)  # type: ignore[arg-type]
    name, k = TEMPLATED[run.cfg.data.name], max(classes) + 1
    want = torch.tensor(classes).repeat_interleave(per_prompt)
    shuffled = want[torch.randperm(len(want), generator=torch.Generator().manual_seed(0))]
    rows = []
    for w in weights:
        pred = _classify(name, sample(_guided(run, w), len(want), prompts=prompts))
        rows.append({"guidance": w, "accuracy": float((pred == want).float().mean()),
                     "shuffled_prompts": float((pred == shuffled).float().mean()),
                     "per_class": [round(float((pred[want == c] == c).float().mean()), 3) for c in range(k)]})
    real = load_dataset(run.cfg.data, "train" if run.cfg.data.name == "mnist-5k" else "test")
    real_pred = _classify(name, real.x[:2000])
    return {"kind": "class", "prompts": prompts, "per_prompt": per_prompt, "rows": rows, "chance": 1 / k,
            "ceiling": float((real_pred == real.y[:2000]).float().mean())}


def _caption_embeddings(encoder: Any, captions: Sequence[str]) -> torch.Tensor:
    return torch.cat([encoder.embed(list(captions[i : i + 256])).cpu() for i in range(0, len(captions), 256)])


def _ranks(x: torch.Tensor, own: torch.Tensor, train_x: torch.Tensor, caption_emb: torch.Tensor,
           prompt_emb: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Rank (1 = best) of each image's own prompt index `own` among the prompts, by its neighbours' captions."""
    d = torch.cdist(x.flatten(1).float(), train_x.flatten(1).float())
    if exclude is not None:
        d[torch.arange(len(x)), exclude] = float("inf")
    k = max(1, min(NEIGHBOURS, len(train_x) - (exclude is not None)))  # a tiny training set has fewer
    nn_idx = d.topk(k, largest=False).indices  # (N, k)
    sims = (caption_emb[nn_idx] @ prompt_emb.T).mean(1)  # (N, P)
    return 1 + (sims > sims.gather(1, own[:, None])).sum(1)


def _summary(ranks: torch.Tensor) -> dict[str, float]:
    return {"top1": float((ranks == 1).float().mean()), "top5": float((ranks <= 5).float().mean()),
            "mrr": float((1.0 / ranks.float()).mean())}


def retrieval_alignment(run: Any, weights: Sequence[float], per_prompt: int) -> dict[str, Any]:
    """Retrieval of each sample's own prompt through its nearest training images' captions, per guidance weight."""
    from ..data import load_dataset
    from ..prompting import _run_encoder, with_prompts
    from ..sampling import sample

    prompts, items = eval_prompts(run)
    data = load_dataset(run.cfg.data, "train")
    encoder = _run_encoder(with_prompts(run, prompts))
    caption_emb = _caption_embeddings(encoder, [o[0] for o in caption_options(data, "train")])
    prompt_emb = _caption_embeddings(encoder, prompts)
    own = torch.arange(len(prompts)).repeat_interleave(per_prompt)
    shuffled = own[torch.randperm(len(own), generator=torch.Generator().manual_seed(0))]
    rows = []
    for w in weights:
        x = sample(_guided(run, w), len(own), prompts=prompts)
        rows.append({"guidance": w, **_summary(_ranks(x, own, data.x, caption_emb, prompt_emb)),
                     "shuffled_prompts": _summary(_ranks(x, shuffled, data.x, caption_emb, prompt_emb))})
    idx = torch.tensor(items)
    ceiling = _summary(_ranks(data.x[idx], torch.arange(len(prompts)), data.x, caption_emb, prompt_emb, exclude=idx))
    harmonic = sum(1 / r for r in range(1, len(prompts) + 1)) / len(prompts)
    return {"kind": "retrieval", "prompts": prompts, "per_prompt": per_prompt, "neighbours": NEIGHBOURS,
            "rows": rows, "ceiling": ceiling, "chance": {"top1": 1 / len(prompts), "mrr": harmonic}}


def alignment(run: Any, weights: Sequence[float], per_prompt: int = 4) -> dict[str, Any]:
    """class_alignment for templated runs, retrieval_alignment for captioned ones."""
    if not run.cfg.model.context_dim:
        raise ConfigError(f"--prompts needs a text-conditional run; {run.path} was trained without prompts")
    if per_prompt < 1:
        raise ConfigError(f"--per-prompt must be at least 1, got {per_prompt}")
    if run.cfg.data.captions == "templates":
        return class_alignment(run, weights, per_prompt)
    return retrieval_alignment(run, weights, per_prompt)


def format_alignment(r: dict[str, Any]) -> list[str]:
    """One line per guidance weight, then the ceiling and the floor."""
    if r["kind"] == "class":
        lines = [f"w = {row['guidance']:g}: accuracy {row['accuracy']:.3f} (shuffled prompts "
                 f"{row['shuffled_prompts']:.3f})" for row in r["rows"]]
        return lines + [f"real images: {r['ceiling']:.3f}; chance {r['chance']:.3f}"]
    lines = [f"w = {row['guidance']:g}: top-1 {row['top1']:.3f}, top-5 {row['top5']:.3f}, MRR {row['mrr']:.3f} "
             f"(shuffled prompts: MRR {row['shuffled_prompts']['mrr']:.3f})" for row in r["rows"]]
    c = r["ceiling"]
    return lines + [f"real images: top-1 {c['top1']:.3f}, top-5 {c['top5']:.3f}, MRR {c['mrr']:.3f}; chance "
                    f"top-1 {r['chance']['top1']:.3f}, MRR {r['chance']['mrr']:.3f} ({len(r['prompts'])} prompts)"]
