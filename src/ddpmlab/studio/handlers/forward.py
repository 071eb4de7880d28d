"""The Forward tab's handlers: a picture noised by q(x_t | x_0), and the t slider kept within T."""

from pathlib import Path

import numpy as np

from ...errors import DDPMLabError
from .. import gradio
from ..figures import snr_curve
from ..jobs.forward import forward
from ..jobs.inputs import dataset_image, uploaded_picture
from .common import friendly, picture_file


def _as_picture(x) -> np.ndarray:
    """A (1, C, H, W) picture in [-1, 1] as (H, W, C) uint8."""
    from ...viz import grid_image

    return grid_image(x, nrow=1, padding=0)


@friendly
def forward_view(source, dataset, index, upload, schedule, T, t, seed):
    """The Forward tab: x_0, x_t at t, the strip over t and the log-SNR curve with t marked."""
    if source == "upload":
        if not upload:
            raise DDPMLabError("upload a picture first, or choose a dataset image")
        x0 = uploaded_picture(upload, size=64 if _too_big(upload) else 0)
        what = Path(upload).name
    else:
        x0, label = dataset_image(dataset, int(index or 0))
        what = f"{dataset} #{int(index or 0)}" + (f" ({label})" if label else "")
    T, t = int(T), min(int(t), int(T))  # a t beyond a T just lowered: the slider follows at once
    r = forward(x0, schedule, T, t, int(seed or 0))
    text = (f"{what}: t = {t}, alpha_bar_t = {r.alpha_bar:.4g}, signal-to-noise ratio alpha_bar / (1 - alpha_bar) = "
            f"{np.exp(r.log_snr) if np.isfinite(r.log_snr) else float('inf'):.4g} (log-SNR {r.log_snr:.3g}); "
            f"strip at t = {', '.join(map(str, r.strip_ts))}")
    curve = snr_curve(r.curve[0], r.curve[1], t, schedule)
    return (picture_file(_as_picture(x0)), picture_file(r.x_t), picture_file(r.strip), picture_file(curve), text)


def forward_range(T):
    """The t slider for a new T: 0..T, starting at T / 4."""
    T = max(1, int(T or 1))
    return gradio().update(maximum=T, value=T // 4)


def _too_big(path: str) -> bool:
    """Whether an uploaded picture is over 256 px on a side (it is then shown at 64 px)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return max(im.size) > 256
    except Exception:
        return False
