"""The studio's one figure of its own: a schedule's log-SNR curve with the current t marked."""

from __future__ import annotations

import numpy as np


def snr_curve(t: np.ndarray, log_snr: np.ndarray, at: int, schedule: str) -> np.ndarray:
    """log-SNR lambda_t against t (t = 1..T) with a marker at t = at, as an (H, W, 3) uint8 picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.0), dpi=100)
    ax.plot(t, log_snr, lw=1.5, label=f"{schedule}, T = {len(t)}: log(alpha_bar_t / (1 - alpha_bar_t))")
    if at >= 1:
        ax.axvline(at, color="tab:red", lw=1, alpha=0.6)
        ax.plot([at], [log_snr[at - 1]], "o", color="tab:red", label=f"t = {at}: log-SNR {log_snr[at - 1]:.2f}")
    else:
        ax.axvline(0, color="tab:red", lw=1, alpha=0.6, label="t = 0: clean data (log-SNR = +inf)")
    ax.set_xlabel("t")
    ax.set_ylabel("log-SNR  lambda_t")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return picture
