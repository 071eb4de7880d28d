"""What an evaluation returns: frozen dataclasses for the metrics of a sample set (images or 2D points), the
sampling settings, the sweeps, and the whole result. Each turns itself into eval.json (to_json) and into the rows
of eval.md's tables, so nothing downstream branches on what kind of data was scored."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table cell: 4 significant digits, trailing zeros dropped, '-' for none."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


@dataclass(frozen=True)
class ImageMetrics:
    """FID, KID (mean, std over subsets) and precision / recall in a feature space."""

    fid: float
    kid: float
    kid_std: float
    precision: float
    recall: float

    HEADLINE: ClassVar[tuple[str, str]] = ("fid", "FID")  # the metric a sweep plots and a guidance table shows
    # metric -> (label, better, what it measures): eval.md's rows, in this order
    ROWS: ClassVar[dict[str, tuple[str, str, str]]] = {
        "fid": ("FID", "lower", "Frechet distance between Gaussians fitted to the features of samples and real "
                "images (Heusel et al. 2017): one number for quality and diversity together; biased upwards at small N"),
        "kid": ("KID", "lower", "unbiased MMD^2 with a cubic kernel (Binkowski et al. 2018), mean +- std over "
                "subsets: 0 in expectation for a perfect model, so it compares across N better than FID"),
        "precision": ("precision", "higher", "share of samples inside the k-NN (k = 3) balls of real features "
                      "(Kynkaanniemi et al. 2019): fidelity, are samples realistic?"),
        "recall": ("recall", "higher", "share of real images inside the k-NN balls of the samples: diversity, "
                   "is the whole data distribution covered?"),
    }
    SWEEP_COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (("fid", "FID"), ("kid", "KID"),
                                                            ("precision", "precision"), ("recall", "recall"))

    def cell(self, key: str) -> str:
        return f"{fmt(self.kid)} +- {fmt(self.kid_std, 2)}" if key == "kid" else fmt(getattr(self, key))

    def extra_rows(self, floor: "ImageMetrics") -> list[str]:
        return []

    def summary(self, floor: "ImageMetrics") -> str:
        return (f"FID {self.fid:.3f} (real-vs-real floor {floor.fid:.3f}), KID {self.kid:.5f} +- {self.kid_std:.5f} "
                f"(floor {floor.kid:.5f}), precision {self.precision:.3f} ({floor.precision:.3f}), recall "
                f"{self.recall:.3f} ({floor.recall:.3f})")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ToyMetrics:
    """Energy distance and sliced Wasserstein against fresh true points; mode coverage for gmm8."""

    energy_distance: float
    sliced_wasserstein: float
    mode_coverage: dict[str, Any] | None = None  # modes, modes_covered, high_quality (gmm8 only)

    HEADLINE: ClassVar[tuple[str, str]] = ("energy_distance", "energy distance")
    ROWS: ClassVar[dict[str, tuple[str, str, str]]] = {
        "energy_distance": ("energy distance", "lower", "2 E|A-B| - E|A-A'| - E|B-B'| between samples and fresh "
                            "true points (Szekely & Rizzo 2013); a V-statistic, so > 0 even for a perfect model"),
        "sliced_wasserstein": ("sliced Wasserstein SW_2", "lower", "root mean over 180 directions of the 1D W_2^2 "
                               "between projected samples and true points"),
    }
    SWEEP_COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (("energy_distance", "energy distance"),
                                                            ("sliced_wasserstein", "SW_2"))

    def cell(self, key: str) -> str:
        return fmt(getattr(self, key))

    def extra_rows(self, floor: "ToyMetrics") -> list[str]:
        if self.mode_coverage is None or floor.mode_coverage is None:
            return []
        m, f = self.mode_coverage, floor.mode_coverage
        return [f"| modes covered | {m['modes_covered']}/{m['modes']} | {f['modes_covered']}/{f['modes']} | higher "
                "| modes with at least 1/4 of their expected share of samples within 3 std |",
                f"| within 3 std of a mode | {fmt(m['high_quality'])} | {fmt(f['high_quality'])} | higher | share of "
                "samples that land on some mode (VEEGAN's \"high-quality samples\") |"]

    def summary(self, floor: "ToyMetrics") -> str:
        return (f"energy distance {self.energy_distance:.5f} (floor {floor.energy_distance:.5f}), sliced Wasserstein "
                f"{self.sliced_wasserstein:.5f} (floor {floor.sliced_wasserstein:.5f})")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.mode_coverage is None:
            del out["mode_coverage"]
        return out


Metrics = ImageMetrics | ToyMetrics


@dataclass(frozen=True)
class Sampling:
    """How a sample set was drawn, and how long it took."""

    sampler: str
    steps: int
    spacing: str
    nfe: int  # network evaluations per sample
    guidance: float
    seed: int
    seconds: float


@dataclass(frozen=True)
class GuidanceRow:
    guidance: float
    metrics: Metrics
    seconds: float
    accuracy: float | None = None  # of the shipped classifier on the samples, for their requested classes
    per_class: tuple[float, ...] | None = None
    recognizable: float | None = None  # the judge's recognizable share (MNIST runs)

    def to_json(self) -> dict[str, Any]:
        out = {"guidance": self.guidance, **self.metrics.to_json(), "seconds": self.seconds}
        if self.accuracy is not None:
            out.update(accuracy=self.accuracy, per_class=list(self.per_class or ()))
        if self.recognizable is not None:
            out["recognizable_share"] = self.recognizable
        return out


@dataclass(frozen=True)
class SweepRow:
    sampler: str
    steps: int
    nfe: int
    metrics: Metrics
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "steps": self.steps, "nfe": self.nfe, **self.metrics.to_json(),
                "seconds": self.seconds}


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: the main sample set's metrics beside the real-vs-real floor, and the optional parts."""

    run: str
    step: int
    dataset: str
    n: int
    sampling: Sampling
    metrics: Metrics
    floor: Metrics
    info: dict[str, Any]  # the reference set, the feature network and its note (eval.json's top-level keys)
    metric_seconds: float = 0.0
    judge: dict[str, Any] | None = None  # metrics/judge.py's report (MNIST): recognizable share, class balance
    conditional: dict[str, Any] | None = None  # classifier accuracy of conditional samples, per class
    guidance_sweep: tuple[GuidanceRow, ...] = ()
    sweep: tuple[SweepRow, ...] = ()
    files: dict[str, str] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return isinstance(self.metrics, ImageMetrics)

    def to_json(self) -> dict[str, Any]:
        """eval.json: the same keys as ever, "kind" included for readers of the file."""
        out: dict[str, Any] = {"run": self.run, "step": self.step, "dataset": self.dataset, "n": self.n,
                               "kind": "image" if self.is_image else "2d", "sampling": asdict(self.sampling),
                               **self.info, "metrics": self.metrics.to_json(), "floor": self.floor.to_json()}
        for key in ("judge", "conditional"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.guidance_sweep:
            out["guidance_sweep"] = [r.to_json() for r in self.guidance_sweep]
        if self.sweep:
            out["sweep"] = [r.to_json() for r in self.sweep]
        out["metric_seconds"] = self.metric_seconds
        if self.files:
            out["files"] = dict(self.files)
        return out

    def summary_lines(self) -> list[str]:
        """What `ddpmlab eval` prints: the metrics beside their floors, timings, the files written."""
        lines = [f"{self.metrics.summary(self.floor)} at N = {self.n}"
                 + (f", features {self.info['features']}" if "features" in self.info else "")]
        if self.conditional is not None:
            lines.append(f"classifier accuracy of the samples: {self.conditional['accuracy']:.3f}")
        for row in self.guidance_sweep:
            key, label = row.metrics.HEADLINE
            lines.append(f"guidance w = {row.guidance:g}: {label} {getattr(row.metrics, key):.3f}"
                         + (f", accuracy {row.accuracy:.3f}" if row.accuracy is not None else "")
                         + (f", recognizable share {100 * row.recognizable:.1f}%" if row.recognizable is not None
                            else ""))
        lines.append(f"sampling {self.sampling.seconds:.1f} s, metrics {self.metric_seconds:.1f} s")
        return lines + [f"wrote {self.files[key]}" for key in ("json", "markdown") if key in self.files]


@dataclass(frozen=True)
class NllResult:
    """Bits/dim of real images under a run (metrics/nll.py's estimate and its parts)."""

    run: str
    step: int
    dataset: str
    images: str  # which images: held-out test images, or training images where there is no test split
    variance: str
    seed: int
    estimate: dict[str, Any]  # metrics/nll.py's summary: bits_per_dim, stderr, the terms, the estimator
    seconds: float
    file: str = ""

    @property
    def bits_per_dim(self) -> float:
        return self.estimate["bits_per_dim"]

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "step": self.step, "dataset": self.dataset, "images": self.images,
                "variance": self.variance, "seed": self.seed, **self.estimate, "seconds": self.seconds}

    def summary(self) -> str:
        e = self.estimate
        return (f"{e['bits_per_dim']:.4f} +- {e['stderr']:.4f} bits/dim on {e['n']} {self.images} (L_T "
                f"{e['prior_L_T']:.4f}, sum L_t {e['diffusion_sum_L_t']:.4f}, L_0 {e['decoder_L_0']:.4f}); "
                f"{e['estimator']}\nwrote {self.file}")
