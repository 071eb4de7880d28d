"""What every tab is built from: the run and checkpoint pickers, the job folder, the sampler menus; and the
settings their components and events share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHOWN = dict(interactive=False, buttons=["download", "fullscreen"])  # no share button: nothing leaves the machine
NETWORK = dict(concurrency_id="network", concurrency_limit=1)  # jobs on a network take turns, across pages


@dataclass(frozen=True)
class Page:
    """The page-wide pieces a tab uses: the run and checkpoint dropdowns, where jobs write, the menus' choices."""

    run: Any  # gr.Dropdown of run directories
    checkpoint: Any  # gr.Dropdown of training steps, or "latest"
    workdir: Path
    samplers: list[str]
    spacings: list[str]
