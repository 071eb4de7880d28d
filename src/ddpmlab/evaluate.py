"""The eval job: sample a run, score the samples against held-out real data, write eval.json and eval.md.

Notation:
    N        samples scored (the run's samples and the real floor set have N items each)
    phi      the feature extractor (metrics/features.py); FID, KID and precision/recall live in its space
    floor    the same metric between two disjoint sets of *real* data at the same N: what a perfect model
             would score, because every sample metric is biased upwards at finite N
    NFE      network evaluations per sample (Heun: 2 per step, minus 1 for its last, Euler, step)

Images: FID / KID / precision-recall against the held-out split (or, for datasets without one, the other
half of the data), classifier accuracy of class-conditional samples. 2D data: energy distance and sliced
Wasserstein against fresh draws of the true distribution, mode coverage for gmm8.
Reference features are cached per dataset and feature extractor (see `cache_dir`).
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import checkpoint as ckpt
from .config import DataConfig
from .errors import ConfigError, DataError
from .sample import LoadedRun, check_guidance, sample, with_sample_settings

HELD_OUT_SPLIT = {"mnist", "fashion-mnist", "cifar10"}  # datasets with a real test split
SUBSET_SEED = 0  # which real images form the reference and floor sets: fixed, so caches stay valid
CACHE_VERSION = "v1"
MIN_N = 10


def default_cache_dir() -> Path:
    """$DDPMLAB_CACHE, else $XDG_CACHE_HOME/ddpmlab, else ~/.cache/ddpmlab; reference statistics go in eval/."""
    if os.environ.get("DDPMLAB_CACHE"):
        return Path(os.environ["DDPMLAB_CACHE"]) / "eval"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ddpmlab" / "eval"


@dataclass(frozen=True)
class RealSets:
    """Real images for one dataset: reference (held out) and floor (N other real images), each with a note."""

    reference: torch.Tensor
    reference_labels: torch.Tensor | None
    floor: torch.Tensor
    reference_note: str
    floor_note: str


def real_sets(data: DataConfig, n: int) -> RealSets:
    """The reference set (the test split, or the odd-indexed half) and N disjoint real images for the floor.

    n = 0 gives just the reference (the training split of a dataset with a test split is then not loaded).
    """
    from .data import load_dataset

    gen = torch.Generator().manual_seed(SUBSET_SEED)
    if data.name in HELD_OUT_SPLIT:
        test = load_dataset(data, "test")
        train = load_dataset(data, "train").x if n else test.x[:0]
        pick = torch.randperm(len(train), generator=gen)[:n]
        return RealSets(test.x, test.y, train[pick], f"reference: the {len(test.x)} images of the test split",
                        f"floor: {len(pick)} random training images")
    full = load_dataset(data, "train")
    ref_idx, pool_idx = torch.arange(1, len(full.x), 2), torch.arange(0, len(full.x), 2)
    pick = pool_idx[torch.randperm(len(pool_idx), generator=gen)[:n]]
    ref_note = (f"{data.name} has no test split: reference = the {len(ref_idx)} odd-indexed images (the model "
                "trained on them too)")
    floor_note = f"floor: {len(pick)} of the {len(pool_idx)} even-indexed images (a disjoint half)"
    if len(pick) < n:
        floor_note += f"; fewer real images than N = {n}, so the floor is biased upwards"
    return RealSets(full.x[ref_idx], None if full.y is None else full.y[ref_idx], full.x[pick], ref_note, floor_note)


def cached(key: str, compute: Callable[[], tuple[dict[str, torch.Tensor], str]], cache_dir: Path | None,
           log: Callable[[str], None]) -> tuple[dict[str, torch.Tensor], str]:
    """compute() -> (tensors, note), read from cache_dir/key.safetensors if present, else computed and written atomically."""
    from safetensors import safe_open
    from safetensors.torch import save

    path = None if cache_dir is None else cache_dir / f"{key}.safetensors"
    if path is not None and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {}).get("note", "")
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    tensors, note = compute()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"key": key, "note": note})
            ckpt.atomic_write(path, lambda f: f.write(blob))
            log(f"cached reference features in {path}")
        except OSError as exc:
            warnings.warn(f"could not cache reference features in {path} ({exc.strerror or exc}); continuing")
    return tensors, note


def nfe_of(run: LoadedRun) -> int:
    """Network evaluations per sample for run.cfg.sample (timesteps after spacing merges duplicates)."""
    from .samplers import resolve_spacing
    from .schedules import spaced_timesteps

    s = run.cfg.sample
    spacing = resolve_spacing(s.sampler, s.spacing, s.steps, run.schedule.T)
    ts = spaced_timesteps(run.schedule, s.steps, spacing)
    if s.sampler == "heun":
        from .samplers.karras import heun_evaluations

        return heun_evaluations(run.schedule, ts)
    return len(ts)


def image_metrics(phi_gen: torch.Tensor, phi_ref: torch.Tensor, phi_ref_n: torch.Tensor, seed: int) -> dict:
    """FID (vs the whole reference), KID and precision/recall (vs N reference images) of features phi_gen."""
    from .metrics.frechet import fid_from_features
    from .metrics.kid import kid
    from .metrics.precision_recall import precision_recall

    k_mean, k_std = kid(phi_gen, phi_ref, subset_size=min(1000, len(phi_gen)), seed=seed)
    precision, recall = precision_recall(phi_ref_n, phi_gen)
    return {"fid": fid_from_features(phi_gen, phi_ref), "kid": k_mean, "kid_std": k_std,
            "precision": precision, "recall": recall}


def toy_metrics(points: torch.Tensor, fresh: torch.Tensor, dataset: str) -> dict:
    """Energy distance and sliced Wasserstein against fresh true points (and gmm8 mode coverage)."""
    from .metrics.toy import energy_distance, mode_coverage, sliced_wasserstein

    out: dict[str, Any] = {"energy_distance": energy_distance(points, fresh),
                           "sliced_wasserstein": sliced_wasserstein(points, fresh)}
    if dataset == "gmm8":
        out["mode_coverage"] = mode_coverage(points)
    return out


class Scorer:
    """Scores sample sets of one run: images through phi against the real sets, or 2D points exactly.

    Built once per evaluation (reference features from the cache or computed, the floor metrics), then
    metrics_of(samples) for every sample set: the main one and each sweep entry.
    """

    def __init__(self, run: LoadedRun, n: int, features: str, inception_weights: str | None, seed: int,
                 cache_dir: Path | None, log: Callable[[str], None]) -> None:
        self.run, self.n, self.seed, self.info, self.log = run, n, seed, {}, log
        self.classifier = None  # the dataset's shipped classifier, for the accuracy of conditional samples
        self.judge = None  # the dataset's judge (metrics/judge.py): recognizable share and class balance
        name = run.cfg.data.name
        if not run.is_image:
            from .data import TOYS, toy_points

            if name not in TOYS:
                raise DataError(f"2D evaluation needs one of the toy distributions ({', '.join(TOYS)}), got {name}")
            self.fresh = toy_points(name, n, seed=1000 + seed)[0]
            self.floor = self.metrics_of(toy_points(name, n, seed=2000 + seed)[0])
            self.info = {"reference": f"{n} fresh points of the true {name} distribution (seed {1000 + seed}); "
                                      f"floor: {n} more (seed {2000 + seed})"}
            return
        from .metrics.features import DATASET_CLASSIFIER, load_classifier, select_features

        self.phi = select_features(name, run.item_shape, features, inception_weights)  # type: ignore[arg-type]
        if not self.phi.comparable and self.phi.classifier is None:
            warnings.warn(f"{name}: no feature network for this dataset, so FID/KID/precision/recall use "
                          f"{self.phi.key}; the numbers are NOT comparable with published FIDs (pass "
                          "--features inception --inception-weights PATH for that)")
        c, h, w = run.item_shape
        if name in DATASET_CLASSIFIER and c == 1:
            self.classifier = load_classifier(DATASET_CLASSIFIER[name])[0]
        from .metrics.judge import judge_for

        self.judge = judge_for(name, run.item_shape)
        real = functools.cache(lambda: real_sets(run.cfg.data, n))  # images are loaded only on a cache miss

        def reference() -> tuple[dict[str, torch.Tensor], str]:
            r = real()
            out = {"features": self.phi(r.reference)}
            if self.classifier is not None and r.reference_labels is not None:
                out["labels"] = r.reference_labels
                out["predicted"] = self.predict(r.reference)
            return out, r.reference_note

        # folders can change on disk under the same name, so only registered datasets are cached
        cache = None if name.startswith("folder:") else cache_dir
        key = f"{name}-{c}x{h}x{w}-{self.phi.key}-{CACHE_VERSION}"
        ref, ref_note = cached(f"{key}-reference", reference, cache, log)
        floor, floor_note = cached(f"{key}-floor{n}", lambda: ({"features": self.phi(real().floor)}, real().floor_note),
                                   cache, log)
        self.phi_ref = ref["features"]
        pick = torch.randperm(len(self.phi_ref), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]
        self.phi_ref_n = self.phi_ref[pick]
        self.floor = image_metrics(floor["features"], self.phi_ref, self.phi_ref_n, seed)
        self.info = {"reference": f"{ref_note}; {floor_note}", "features": self.phi.key, "feature_dim": self.phi.dim,
                     "features_note": self.phi.note, "comparable_with_papers": self.phi.comparable}
        if run.cfg.model.num_classes and "predicted" in ref:
            self.info["classifier_accuracy_on_real"] = float((ref["predicted"] == ref["labels"]).double().mean())

    def metrics_of(self, samples: torch.Tensor) -> dict:
        if not self.run.is_image:
            return toy_metrics(samples, self.fresh, self.run.cfg.data.name)
        return image_metrics(self.phi(samples), self.phi_ref, self.phi_ref_n, self.seed)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.classifier(b) for b in images.split(500)])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(1)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        from .metrics.accuracy import class_accuracy

        return class_accuracy(self.logits(images), labels, self.run.cfg.model.num_classes)


def _labels(run: LoadedRun, n: int) -> torch.Tensor | None:
    k = run.cfg.model.num_classes
    return torch.arange(n) % k if k else None


def _timed_sample(run: LoadedRun, n: int, labels: torch.Tensor | None, progress: bool) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = sample(run, n, labels=labels, progress=progress)
    return out, time.perf_counter() - t0


def evaluate(run: LoadedRun, n: int = 2000, sampler: str | None = None, steps: int | None = None, *,
             guidance: float | None = None, guidance_sweep: list[float] | None = None,
             sweep_steps: list[int] | None = None, samplers: list[str] | None = None, features: str = "auto",
             inception_weights: str | None = None, seed: int | None = None, batch_size: int | None = None,
             cache_dir: str | Path | None = "default", out_dir: str | Path | None = None, progress: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Sample n items from run, score them against real data and write eval.json / eval.md into out_dir (run.path).

    sampler / steps / guidance / seed override the run's sample settings. guidance_sweep: also score these
    guidance weights (conditional runs). sweep_steps x samplers: also score each sampler at each step count
    (quality vs NFE table and plot). cache_dir: where reference features are cached ("default":
    default_cache_dir(); None: no cache). Returns what eval.json holds.
    """
    from .samplers import SAMPLERS, resolve_spacing

    if n < MIN_N:
        raise ConfigError(f"--n must be at least {MIN_N} for precision/recall and KID, got {n}")
    for name in [sampler, *(samplers or [])]:
        if name is not None and name not in SAMPLERS:
            raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if features not in ("auto", "classifier", "inception"):
        raise ConfigError(f"unknown --features {features!r}; choose auto, classifier or inception")
    run = with_sample_settings(run, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                               batch_size=batch_size, spacing="auto" if sampler else None)
    check_guidance(run, run.cfg.sample.guidance)
    for w in guidance_sweep or []:
        check_guidance(run, w)
    sweep_runs = [with_sample_settings(run, sampler=s, steps=k, spacing="auto")
                  for s in (samplers or ([run.cfg.sample.sampler] if sweep_steps else []))
                  for k in (sweep_steps or [run.cfg.sample.steps])]
    out_dir = Path(out_dir or run.path)
    if not out_dir.is_dir():
        raise ConfigError(f"output folder {out_dir} does not exist")
    cache = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    s = run.cfg.sample

    t_metric = time.perf_counter()
    scorer = Scorer(run, n, features, inception_weights, s.seed, cache, log)
    metric_seconds = time.perf_counter() - t_metric
    labels = _labels(run, n)
    log(f"sampling {n} from {run.path} (step {run.step}) with {s.sampler}, {s.steps} steps"
        f"{f', guidance {s.guidance:g}' if s.guidance else ''}, seed {s.seed}")
    samples, sample_seconds = _timed_sample(run, n, labels, progress)
    t_metric = time.perf_counter()
    result: dict[str, Any] = {
        "run": str(run.path), "step": run.step, "dataset": run.cfg.data.name, "n": n,
        "kind": "image" if run.is_image else "2d",
        "sampling": {"sampler": s.sampler, "steps": s.steps,
                     "spacing": resolve_spacing(s.sampler, s.spacing, s.steps, run.schedule.T),
                     "nfe": nfe_of(run),
                     "guidance": s.guidance, "seed": s.seed, "seconds": round(sample_seconds, 2)},
        **scorer.info,
        "metrics": scorer.metrics_of(samples), "floor": scorer.floor,
    }
    if scorer.judge is not None:
        from .metrics.judge import judge_summary

        result["judge"] = scorer.judge.report(samples)
        log(judge_summary(result["judge"]))
    if run.is_image and labels is not None and scorer.classifier is not None:
        result["conditional"] = {**scorer.accuracy(samples, labels), "class_names": list(run.class_names)}
    metric_seconds += time.perf_counter() - t_metric
    if guidance_sweep:
        result["guidance_sweep"] = _guidance_sweep(run, scorer, guidance_sweep, n, labels, progress, log)
    if sweep_runs:
        result["sweep"] = _sampler_sweep(sweep_runs, scorer, n, labels, progress, log)
    result["metric_seconds"] = round(metric_seconds, 2)

    from .eval_report import write_outputs

    result["files"] = write_outputs(result, run, samples, labels, out_dir)
    return result


def _guidance_sweep(run: LoadedRun, scorer: Scorer, weights: list[float], n: int, labels, progress: bool,
                    log: Callable[[str], None]) -> list[dict]:
    rows = []
    for w in weights:
        log(f"guidance sweep: w = {w:g}")
        samples, seconds = _timed_sample(with_sample_settings(run, guidance=w), n, labels, progress)
        row = {"guidance": w, **scorer.metrics_of(samples), "seconds": round(seconds, 2)}
        if run.is_image and scorer.classifier is not None and labels is not None:
            acc = scorer.accuracy(samples, labels)
            row.update(accuracy=acc["accuracy"], per_class=acc["per_class"])
        rows.append(row)
    return rows


def _sampler_sweep(runs: list[LoadedRun], scorer: Scorer, n: int, labels, progress: bool,
                   log: Callable[[str], None]) -> list[dict]:
    rows = []
    for r in runs:
        s = r.cfg.sample
        log(f"sweep: {s.sampler}, {s.steps} steps")
        samples, seconds = _timed_sample(r, n, labels, progress)
        rows.append({"sampler": s.sampler, "steps": s.steps, "nfe": nfe_of(r), **scorer.metrics_of(samples),
                     "seconds": round(seconds, 2)})
    return rows


def evaluate_nll(run: LoadedRun, n: int = 500, *, timesteps: int | None = None, variance: str = "posterior",
                 seed: int = 0, batch_size: int = 250, progress: bool = False,
                 out_dir: str | Path | None = None) -> dict[str, Any]:
    """Bits/dim of n real images under run's model (metrics/nll.py), written to nll.json in out_dir (run.path).

    Images come from the test split, or for datasets without one the odd-indexed half (which the model
    saw in training: the number is then a training-set likelihood, and says so). Conditional models are
    evaluated unconditionally, through the null label.
    """
    from .diffusion import Denoised, make_denoiser
    from .metrics.nll import nll_bits_per_dim

    if not run.is_image:
        raise ConfigError(f"{run.path} models 2D points; bits/dim is defined for 8-bit images")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if timesteps is not None and timesteps < 1:
        raise ConfigError(f"--timesteps must be at least 1, got {timesteps}")
    if variance not in ("posterior", "beta"):
        raise ConfigError(f"--variance must be posterior or beta, got {variance!r}")
    x0 = real_sets(run.cfg.data, 0).reference[:n]
    k = run.cfg.model.num_classes
    null = torch.tensor([k], device=run.device) if k else None  # one label, repeated to every batch
    net = make_denoiser(run.model, run.schedule, run.cfg.diffusion.prediction, y=null,
                        clip=1.0 if run.cfg.sample.clip else None)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Denoised:
        out = net(x_t.to(run.device), t.to(run.device))
        return Denoised(out.x0.cpu(), out.eps.cpu())

    t0 = time.perf_counter()
    res = nll_bits_per_dim(denoise, run.schedule, x0, variance=variance, timesteps=timesteps,  # type: ignore[arg-type]
                           generator=torch.Generator().manual_seed(seed), batch_size=batch_size, progress=progress)
    which = "held-out test images" if run.cfg.data.name in HELD_OUT_SPLIT else \
        f"training images ({run.cfg.data.name} has no test split)"
    out = {"run": str(run.path), "step": run.step, "dataset": run.cfg.data.name, "images": which,
           "variance": variance, "seed": seed, **res.summary(), "seconds": round(time.perf_counter() - t0, 1)}
    path = Path(out_dir or run.path) / "nll.json"
    blob = (json.dumps(out, indent=2) + "\n").encode()
    ckpt.atomic_write(path, lambda f: f.write(blob))
    out["file"] = str(path)
    return out
