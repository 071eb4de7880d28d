"""What a run has written, for the Run tab: its config, loss curve, metrics, evaluation report and results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runs import checkpoint_steps


@dataclass(frozen=True)
class RunRecords:
    """A run's records as the Run tab shows them."""

    config: str
    loss_png: Path | None
    metrics: list[dict[str, str]]  # the last rows of metrics.csv
    report: str  # eval.md, or ""
    results: dict[str, Any]  # nll.json / alignment.json, by file name
    checkpoints: tuple[int, ...]


def run_records(path: str | Path, out_dir: Path, rows: int = 12) -> RunRecords:
    """config.toml, the loss curve (drawn from metrics.csv), the last metrics rows, eval.md and other results."""
    import csv

    from ... import checkpoint as ckpt
    from ...viz import plot_loss

    path = Path(path)
    ckpt.read_config(path)
    config = (path / ckpt.CONFIG).read_text()
    metrics, loss_png = [], None
    if (path / ckpt.METRICS).is_file():
        with open(path / ckpt.METRICS) as f:
            metrics = list(csv.DictReader(f))
        out_dir.mkdir(parents=True, exist_ok=True)
        loss_png = out_dir / "loss.png"
        plot_loss(path / ckpt.METRICS, loss_png)
        if not loss_png.is_file():
            loss_png = None
    report = (path / "eval.md").read_text() if (path / "eval.md").is_file() else ""
    results = {}
    for name in ("eval.json", "nll.json", "alignment.json"):
        if (path / name).is_file():
            try:
                results[name] = json.loads((path / name).read_text())
            except ValueError:
                results[name] = {"error": f"{name} is not valid JSON"}
    return RunRecords(config, loss_png, metrics[-rows:], report, results, checkpoint_steps(path))
