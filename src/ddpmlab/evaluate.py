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
Reference sets and their feature cache are reference.py's; bits/dim is likelihood.py's.
"""

from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import ConfigError, DataError
from .eval_results import EvalResult, GuidanceRow, ImageMetrics, Metrics, Sampling, SweepRow, ToyMetrics
from .likelihood import evaluate_nll  # noqa: F401 (its old home)
from .reference import CACHE_VERSION, SUBSET_SEED, cached, default_cache_dir, real_sets  # noqa: F401
from .sampling import (Run, check_guidance, generate, requested_spacing, run_labels, timesteps_of,
                       with_sample_settings)

MIN_N = 10


def nfe_of(run: Run) -> int:
    """Network evaluations per sample for run.cfg.sample (timesteps after spacing merges duplicates)."""
    from .samplers import SAMPLERS

    return SAMPLERS[run.cfg.sample.sampler].evaluations(run.schedule, timesteps_of(run))


def image_metrics(phi_gen: torch.Tensor, phi_ref: torch.Tensor, phi_ref_n: torch.Tensor, seed: int) -> ImageMetrics:
    """FID (vs the whole reference), KID and precision/recall (vs N reference images) of features phi_gen."""
    from .metrics.frechet import fid_from_features
    from .metrics.kid import kid
    from .metrics.precision_recall import precision_recall

    k_mean, k_std = kid(phi_gen, phi_ref, subset_size=min(1000, len(phi_gen)), seed=seed)
    precision, recall = precision_recall(phi_ref_n, phi_gen)
    return ImageMetrics(fid_from_features(phi_gen, phi_ref), k_mean, k_std, precision, recall)


def toy_metrics(points: torch.Tensor, fresh: torch.Tensor, dataset: str) -> ToyMetrics:
    """Energy distance and sliced Wasserstein against fresh true points (and gmm8 mode coverage)."""
    from .metrics.toy import energy_distance, mode_coverage, sliced_wasserstein

    return ToyMetrics(energy_distance(points, fresh), sliced_wasserstein(points, fresh),
                      mode_coverage(points) if dataset == "gmm8" else None)


class ToyScorer:
    """Scores 2D point sets of a toy run exactly: against fresh draws of the true distribution."""

    classifier = None
    judge = None

    def __init__(self, run: Run, n: int, seed: int) -> None:
        from .data import TOYS, toy_points

        name = run.cfg.data.name
        if name not in TOYS:
            raise DataError(f"2D evaluation needs one of the toy distributions ({', '.join(TOYS)}), got {name}")
        self.run, self.n = run, n
        self.fresh = toy_points(name, n, seed=1000 + seed)[0]
        self.floor = self.score(toy_points(name, n, seed=2000 + seed)[0])
        self.info = {"reference": f"{n} fresh points of the true {name} distribution (seed {1000 + seed}); "
                                  f"floor: {n} more (seed {2000 + seed})"}

    def score(self, samples: torch.Tensor) -> ToyMetrics:
        return toy_metrics(samples, self.fresh, self.run.cfg.data.name)


class ImageScorer:
    """Scores image sets of one run through a feature network phi against the real reference set.

    Built once per evaluation (reference features from the cache or computed, the floor metrics), then score()
    for every sample set: the main one and each sweep entry. The dataset's shipped classifier (accuracy of
    conditional samples) and judge (recognizable share, metrics/judge.py) come along where they exist.
    """

    def __init__(self, run: Run, n: int, features: str, inception_weights: str | None, seed: int,
                 cache_dir: Path | None, log: Callable[[str], None]) -> None:
        from .metrics.features import DATASET_CLASSIFIER, load_classifier, select_features
        from .metrics.judge import judge_for

        self.run, self.n, self.seed = run, n, seed
        name, (c, h, w) = run.cfg.data.name, run.item_shape
        self.phi = select_features(name, run.item_shape, features, inception_weights)  # type: ignore[arg-type]
        if not self.phi.comparable and self.phi.classifier is None:
            warnings.warn(f"{name}: no feature network for this dataset, so FID/KID/precision/recall use "
                          f"{self.phi.key}; the numbers are NOT comparable with published FIDs (pass "
                          "--features inception --inception-weights PATH for that)")
        self.classifier = load_classifier(DATASET_CLASSIFIER[name])[0] if name in DATASET_CLASSIFIER and c == 1 else None
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
        self.info: dict[str, Any] = {"reference": f"{ref_note}; {floor_note}", "features": self.phi.key,
                                     "feature_dim": self.phi.dim, "features_note": self.phi.note,
                                     "comparable_with_papers": self.phi.comparable}
        if run.has_classes and "predicted" in ref:
            self.info["classifier_accuracy_on_real"] = float((ref["predicted"] == ref["labels"]).double().mean())

    def score(self, samples: torch.Tensor) -> ImageMetrics:
        return image_metrics(self.phi(samples), self.phi_ref, self.phi_ref_n, self.seed)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.classifier(b) for b in images.split(500)])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(1)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        from .metrics.accuracy import class_accuracy

        return class_accuracy(self.logits(images), labels, self.run.cfg.model.num_classes)


def Scorer(run: Run, n: int, features: str = "auto", inception_weights: str | None = None, seed: int = 0,
           cache_dir: Path | None = None, log: Callable[[str], None] = print) -> ImageScorer | ToyScorer:
    """The scorer for a run's kind of data: ImageScorer for images, ToyScorer for 2D points."""
    if run.is_image:
        return ImageScorer(run, n, features, inception_weights, seed, cache_dir, log)
    return ToyScorer(run, n, seed)


def _timed_sample(run: Run, n: int, labels: torch.Tensor | None, progress: bool) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = generate(run, n, labels=labels, progress=progress)
    return out, time.perf_counter() - t0


def _sampling(run: Run, seconds: float) -> Sampling:
    from .samplers import resolve_spacing

    s = run.cfg.sample
    return Sampling(s.sampler, s.steps, resolve_spacing(s.sampler, s.spacing, s.steps, run.schedule.T), nfe_of(run),
                    s.guidance, s.seed, round(seconds, 2))


def evaluate(run: Run, n: int = 2000, sampler: str | None = None, steps: int | None = None, *,
             guidance: float | None = None, guidance_sweep: list[float] | None = None,
             sweep_steps: list[int] | None = None, samplers: list[str] | None = None, features: str = "auto",
             inception_weights: str | None = None, seed: int | None = None, batch_size: int | None = None,
             spacing: str | None = None, cache_dir: str | Path | None = "default", out_dir: str | Path | None = None,
             progress: bool = False, log: Callable[[str], None] = print) -> EvalResult:
    """Sample n items from run, score them against real data and write eval.json / eval.md into out_dir (run.path).

    sampler / steps / spacing / guidance / seed override the run's sample settings (a new sampler without a spacing
    takes "auto"; spacing "tuned" scores the timesteps `ddpmlab tune` fitted). guidance_sweep: also score these
    guidance weights (conditional runs). sweep_steps x samplers: also score each sampler at each step count
    (quality vs NFE table and plot). cache_dir: where reference features are cached ("default":
    default_cache_dir(); None: no cache).
    """
    if n < MIN_N:
        raise ConfigError(f"--n must be at least {MIN_N} for precision/recall and KID, got {n}")
    run = with_sample_settings(run, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                               batch_size=batch_size, spacing=requested_spacing(sampler, spacing))
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
    labels = run_labels(run, n)
    log(f"sampling {n} from {run.path} (step {run.step}) with {s.sampler}, {s.steps} steps"
        f"{f', guidance {s.guidance:g}' if s.guidance else ''}, seed {s.seed}")
    samples, sample_seconds = _timed_sample(run, n, labels, progress)
    t_metric = time.perf_counter()
    metrics = scorer.score(samples)
    judge = scorer.judge.report(samples) if scorer.judge is not None else None
    if judge is not None:
        from .metrics.judge import judge_summary

        log(judge_summary(judge))
    conditional = None
    if labels is not None and scorer.classifier is not None and run.has_classes:
        conditional = {**scorer.accuracy(samples, labels), "class_names": list(run.class_names)}
    metric_seconds += time.perf_counter() - t_metric
    result = EvalResult(
        str(run.path), run.step, run.cfg.data.name, n, _sampling(run, sample_seconds), metrics, scorer.floor,
        scorer.info, round(metric_seconds, 2), judge, conditional,
        tuple(_guidance_row(run, scorer, w, n, labels, progress, log) for w in guidance_sweep or []),
        tuple(_sweep_row(r, scorer, n, labels, progress, log) for r in sweep_runs))
    from .eval_report import write_outputs

    return write_outputs(result, run, samples, labels, out_dir)


def _guidance_row(run: Run, scorer: ImageScorer | ToyScorer, w: float, n: int, labels, progress: bool,
                  log: Callable[[str], None]) -> GuidanceRow:
    log(f"guidance sweep: w = {w:g}")
    samples, seconds = _timed_sample(with_sample_settings(run, guidance=w), n, labels, progress)
    metrics: Metrics = scorer.score(samples)
    recognizable = scorer.judge.report(samples)["recognizable_share"] if scorer.judge is not None else None
    if scorer.classifier is not None and labels is not None and run.has_classes:
        acc = scorer.accuracy(samples, labels)
        return GuidanceRow(w, metrics, round(seconds, 2), acc["accuracy"], tuple(acc["per_class"]), recognizable)
    return GuidanceRow(w, metrics, round(seconds, 2), recognizable=recognizable)


def _sweep_row(run: Run, scorer: ImageScorer | ToyScorer, n: int, labels, progress: bool,
               log: Callable[[str], None]) -> SweepRow:
    s = run.cfg.sample
    log(f"sweep: {s.sampler}, {s.steps} steps")
    samples, seconds = _timed_sample(run, n, labels, progress)
    return SweepRow(s.sampler, s.steps, nfe_of(run), scorer.score(samples), round(seconds, 2))
