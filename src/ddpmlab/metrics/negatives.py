"""Generated "not a digit" images: the reject class of the MNIST judge (metrics/judge.py) and its floor.

Notation:
    x        digits (N, 1, 28, 28) in [-1, 1] (background -1, ink +1); y their labels (N,)
    ink      (x + 1) / 2 in [0, 1]: the kinds below work in ink, where 0-padding is background
    gen      a torch.Generator: every kind draws only from it, so a seed fixes the images

Each kind is a failure a diffusion model can make, and most are "almost digits" built from real strokes:
noise, blurred blobs, shuffled patches, two half-digits glued together, half-erased digits, two digits
superimposed, random pen strokes, a digit with scribbles over it, heavy elastic distortion and a digit
smeared into a fat blob. `finish` blurs negatives and positives alike, so sharpness is no cue.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F

Kind = Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]
SIZE = 28


def _u(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """(n,) uniform in [lo, hi)."""
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def to_ink(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> ink in [0, 1]."""
    return (x + 1) / 2


def to_image(ink: torch.Tensor) -> torch.Tensor:
    """ink in [0, 1] -> images in [-1, 1] (clamped)."""
    return ink.clamp(0, 1) * 2 - 1


def blur(ink: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of ink (N, 1, H, W) with a per-image sigma (N,) in pixels (sigma ~ 0 leaves it as is)."""
    n = len(ink)
    if n == 0 or float(sigma.max()) < 0.05:
        return ink
    r = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-r, r + 1, dtype=ink.dtype)
    k = torch.exp(-t[None] ** 2 / (2 * sigma.clamp(min=0.05)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # (N, 2r + 1)
    h = ink.reshape(1, n, *ink.shape[-2:])
    h = F.conv2d(F.pad(h, (r, r, 0, 0)), k[:, None, None, :], groups=n)
    h = F.conv2d(F.pad(h, (0, 0, r, r)), k[:, None, :, None], groups=n)
    return h.reshape(ink.shape)


def warp(ink: torch.Tensor, theta: torch.Tensor | None = None, disp: torch.Tensor | None = None) -> torch.Tensor:
    """ink resampled through affine maps theta (N, 2, 3) and/or a displacement field disp (N, 2, H, W) in pixels."""
    n, _, h, w = ink.shape
    if theta is None:
        theta = torch.eye(2, 3, dtype=ink.dtype).expand(n, 2, 3)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if disp is not None:
        grid = grid + disp.permute(0, 2, 3, 1) * (2.0 / torch.tensor([w, h], dtype=ink.dtype))
    return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic_field(n: int, alpha: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 28, 28) smooth random displacements with RMS size alpha (n,) pixels (Simard et al. 2003)."""
    d = blur(torch.randn(n * 2, 1, SIZE, SIZE, generator=gen), torch.full((n * 2,), sigma)).reshape(n, 2, SIZE, SIZE)
    d = d / d.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-6)
    return d * alpha[:, None, None, None]


def affine(n: int, rot_deg: float, scale: tuple[float, float], shift_px: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) random rotations, isotropic scalings and translations for `warp`."""
    a = _u(n, -rot_deg, rot_deg, gen) * math.pi / 180
    s = 1.0 / _u(n, *scale, gen)  # affine_grid maps output to input, so zoom by s means sampling at 1/s
    t = _u(2 * n, -shift_px, shift_px, gen).reshape(n, 2) * 2 / SIZE
    cos, sin = torch.cos(a) * s, torch.sin(a) * s
    return torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)


def pick(y: torch.Tensor, n: int, gen: torch.Generator, avoid: torch.Tensor | None = None,
         exclude: tuple[int, ...] = ()) -> torch.Tensor:
    """(n,) indices into y drawn uniformly, with y[i] != avoid[i] (when given) and y[i] not in exclude."""
    idx = torch.randint(0, len(y), (n,), generator=gen)
    for _ in range(50):
        bad = torch.isin(y[idx], torch.tensor(exclude, dtype=y.dtype)) if exclude else torch.zeros(n, dtype=torch.bool)
        if avoid is not None:
            bad |= y[idx] == avoid
        if not bool(bad.any()):
            break
        idx[bad] = torch.randint(0, len(y), (int(bad.sum()),), generator=gen)
    return idx


def render_strokes(n: int, strokes: tuple[int, int], width: tuple[float, float], gen: torch.Generator,
                   box: tuple[float, float] = (5.0, 23.0)) -> torch.Tensor:
    """(n, 1, 28, 28) ink of 1..k random quadratic Bezier pen strokes of half-width `width` pixels inside `box`."""
    k_max = strokes[1]
    ctrl = _u(n * k_max * 6, *box, gen).reshape(n, k_max, 3, 2)
    t = torch.linspace(0, 1, 20)[None, None, :, None]
    pts = (1 - t) ** 2 * ctrl[:, :, 0:1] + 2 * (1 - t) * t * ctrl[:, :, 1:2] + t ** 2 * ctrl[:, :, 2:3]
    used = torch.arange(k_max)[None] < torch.randint(strokes[0], k_max + 1, (n, 1), generator=gen)
    pts = torch.where(used[:, :, None, None], pts, torch.full_like(pts, 1e3)).reshape(n, -1, 2)
    yy, xx = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    pix = torch.stack([xx.flatten(), yy.flatten()], 1)  # (784, 2)
    d = torch.cdist(pix[None].expand(n, -1, -1), pts).amin(2)  # (n, 784)
    w = _u(n, *width, gen)[:, None]
    return (w - d + 0.5).clamp(0, 1).reshape(n, 1, SIZE, SIZE)


# ---------------------------------------------------------------- the kinds: (x, y, n, gen) -> (n, 1, 28, 28) ink


def noise(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Gaussian, uniform, smoothed-and-stretched and sparse-dot noise, a quarter each (in random order)."""
    g = (_u(n, -0.2, 0.5, gen)[:, None, None, None] + _u(n, 0.1, 0.6, gen)[:, None, None, None]
         * torch.randn(n, 1, SIZE, SIZE, generator=gen))
    uni = torch.rand(n, 1, SIZE, SIZE, generator=gen) * _u(n, 0.3, 1.0, gen)[:, None, None, None]
    smooth = blur(torch.randn(n, 1, SIZE, SIZE, generator=gen), _u(n, 0.8, 2.5, gen))
    level = _u(n, 0.0, 1.5, gen)[:, None, None, None]
    smooth = torch.sigmoid((smooth / smooth.std(dim=(1, 2, 3), keepdim=True) - level) * 4)
    dots = (torch.rand(n, 1, SIZE, SIZE, generator=gen) < _u(n, 0.02, 0.15, gen)[:, None, None, None]).float()
    which = torch.randint(0, 4, (n, 1, 1, 1), generator=gen)
    return torch.where(which == 0, g, torch.where(which == 1, uni, torch.where(which == 2, smooth, dots))).clamp(0, 1)


def blobs(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """1-6 soft Gaussian blobs near the centre, sometimes sharpened to ink-like silhouettes."""
    k = 6
    c = _u(n * k * 2, 7.0, 21.0, gen).reshape(n, k, 1, 1, 2)
    s = _u(n * k, 1.2, 5.0, gen).reshape(n, k, 1, 1)
    a = _u(n * k, 0.5, 1.0, gen).reshape(n, k, 1, 1) * (torch.arange(k)[None] < torch.randint(
        1, k + 1, (n, 1), generator=gen)).reshape(n, k, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    d2 = (xx - c[..., 0]) ** 2 + (yy - c[..., 1]) ** 2
    ink = (a * torch.exp(-d2 / (2 * s ** 2))).sum(1, keepdim=True).clamp(0, 1)
    sharp = torch.sigmoid((ink - _u(n, 0.2, 0.5, gen)[:, None, None, None]) * 12)
    return torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, sharp, ink)


def shuffle(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """A digit cut into 4 x 4 patches of 7 x 7 that are permuted, or into quadrants that are rotated in a cycle."""
    ink = to_ink(x[pick(y, n, gen)])
    p = ink.unfold(2, 7, 7).unfold(3, 7, 7).reshape(n, 16, 7, 7)  # (n, 16 patches, 7, 7), row-major
    perm = torch.argsort(torch.rand(n, 16, generator=gen), 1)
    fine = p[torch.arange(n)[:, None], perm]
    q = ink.unfold(2, 14, 14).unfold(3, 14, 14).reshape(n, 4, 14, 14)
    roll = torch.randint(1, 4, (n, 1), generator=gen)
    coarse = q[torch.arange(n)[:, None], (torch.arange(4)[None] + roll) % 4]

    def fold(patches: torch.Tensor, k: int) -> torch.Tensor:
        m = SIZE // k
        """(n, m * m, k, k) row-major patches -> (n, 1, 28, 28)."""
        return patches.reshape(n, m, m, k, k).permute(0, 1, 3, 2, 4).reshape(n, 1, SIZE, SIZE)

    return torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, fold(fine, 7), fold(coarse, 14))


def chimera(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """The top (or left) part of one digit glued to the rest of a digit of another class."""
    i = pick(y, n, gen)
    j = pick(y, n, gen, avoid=y[i])
    a, b = to_ink(x[i]), to_ink(x[j])
    cut = _u(n, 10.0, 18.0, gen)[:, None, None, None]
    coord = torch.arange(SIZE, dtype=torch.float32) + 0.5
    rows = (coord[None, None, :, None] < cut).float().expand(n, 1, SIZE, SIZE)
    cols = (coord[None, None, None, :] < cut).float().expand(n, 1, SIZE, SIZE)
    m = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.6, rows, cols)
    return m * a + (1 - m) * b


def erase(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """A digit (not a 1) with the ink on one side of a random line through its centre of ink removed, or (half
    of them) a band 3-6 pixels wide through that centre cut out of it."""
    ink = to_ink(x[pick(y, n, gen, exclude=(1,))])
    yy, xx = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    mass = ink.sum(dim=(1, 2, 3)).clamp(min=1e-6)
    cx, cy = (ink * xx).sum(dim=(1, 2, 3)) / mass, (ink * yy).sum(dim=(1, 2, 3)) / mass
    ang = _u(n, 0, 2 * math.pi, gen)
    off = _u(n, -2.0, 2.0, gen)
    side = ((xx - cx[:, None, None]) * torch.cos(ang)[:, None, None] + (yy - cy[:, None, None])
            * torch.sin(ang)[:, None, None] - off[:, None, None])
    half = (side > 0).float()
    band = (side.abs() > _u(n, 1.5, 3.0, gen)[:, None, None]).float()
    return ink * torch.where(torch.rand(n, 1, 1, generator=gen) < 0.5, half, band)[:, None]


def overlay(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Two digits of different classes superimposed (union of strokes, or a half-and-half ghost), one shifted."""
    i = pick(y, n, gen)
    j = pick(y, n, gen, avoid=y[i])
    a = to_ink(x[i])
    b = warp(to_ink(x[j]), affine(n, 15, (0.85, 1.1), 3.0, gen))
    return torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.6, torch.maximum(a, b), (a + b) / 2 * 1.3)


def strokes(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """3-5 random curved pen strokes of MNIST-like width (two can still draw a 1, a 7 or a 0)."""
    return render_strokes(n, (3, 5), (0.8, 1.8), gen)


def scribbled(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """A digit with 2-3 random strokes drawn over it."""
    return torch.maximum(to_ink(x[pick(y, n, gen)]), render_strokes(n, (2, 3), (0.8, 1.6), gen))


def elastic(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """A digit under a heavy elastic distortion (RMS displacement 4.5-7 pixels at smoothness 2-3)."""
    ink = to_ink(x[pick(y, n, gen)])
    return warp(ink, disp=elastic_field(n, _u(n, 4.5, 7.0, gen), float(_u(1, 2.0, 3.0, gen)), gen))


def smear(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """A digit (not a 1) blurred by 2.5-4 pixels and re-thresholded into a fat blob."""
    ink = blur(to_ink(x[pick(y, n, gen, exclude=(1,))]), _u(n, 2.5, 4.0, gen))
    ink = ink / ink.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
    return torch.sigmoid((ink - _u(n, 0.15, 0.4, gen)[:, None, None, None]) * 10)


KINDS: dict[str, Kind] = {"noise": noise, "blobs": blobs, "shuffle": shuffle, "chimera": chimera, "erase": erase,
                          "overlay": overlay, "strokes": strokes, "scribbled": scribbled, "elastic": elastic,
                          "smear": smear}


def finish(ink: torch.Tensor, gen: torch.Generator, max_blur: float = 0.7) -> torch.Tensor:
    """Images in [-1, 1] from ink: half of them under a mild random warp (rotation up to 10 degrees, scale
    0.9-1.1, shift up to 2 pixels, a small elastic wobble), then each lightly blurred by up to max_blur pixels.

    Real digits get the same treatment in training, so resampling and blur are no cue for either class.
    """
    n = len(ink)
    warped = warp(ink, affine(n, 10, (0.9, 1.1), 2.0, gen), elastic_field(n, _u(n, 0.0, 1.0, gen), 3.0, gen))
    ink = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, warped, ink)
    return to_image(blur(ink, _u(n, 0.0, max_blur, gen)))


def make_negatives(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator,
                   kinds: tuple[str, ...] = tuple(KINDS)) -> tuple[torch.Tensor, torch.Tensor]:
    """n negatives (n, 1, 28, 28) in [-1, 1] built from digits x with labels y, and their kind indices (n,) into kinds.

    Kinds are drawn in equal shares (as close as n allows) and shuffled.
    """
    kind = torch.arange(n) % len(kinds)
    kind = kind[torch.randperm(n, generator=gen)]
    out = torch.empty(n, 1, SIZE, SIZE)
    for k, name in enumerate(kinds):
        sel = torch.nonzero(kind == k).flatten()
        if len(sel):
            out[sel] = KINDS[name](x, y, len(sel), gen)
    return finish(out, gen), kind


def augment_digits(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Real digits (N, 1, 28, 28) in [-1, 1] under label-preserving changes, then `finish` as the negatives go.

    A quarter get fatter strokes (3 x 3 dilation), 15% thinner ones (half an erosion); half are rotated up to 15
    degrees, scaled 0.85-1.15, shifted up to 2.5 pixels and wobbled elastically by at most 1.8 pixels RMS (the
    elastic negatives start at 4.5). This widens the positive class beyond the few thousand training digits.
    """
    n = len(x)
    ink = to_ink(x)
    r = torch.rand(n, 1, 1, 1, generator=gen)
    fat = torch.maximum(ink, F.max_pool2d(ink, 3, 1, 1) * _u(n, 0.5, 1.0, gen)[:, None, None, None])
    thin = (ink - F.max_pool2d(-ink, 3, 1, 1)) / 2  # the mean of ink and its erosion
    ink = torch.where(r < 0.25, fat, torch.where(r < 0.4, thin, ink))
    warped = warp(ink, affine(n, 15, (0.85, 1.15), 2.5, gen), elastic_field(n, _u(n, 0.0, 1.8, gen), 3.0, gen))
    ink = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, warped, ink)
    return finish(ink, gen)
