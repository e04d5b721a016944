"""Figure 3 of the paper: the kernels of the first convolutional layer, as one picture.

"96 convolutional kernels of size 11x11x3 learned by the first convolutional layer ... The top 48
kernels were learned on GPU 1 while the bottom 48 kernels were learned on GPU 2." The paper's figure
is 6 rows of 16 kernels: three rows per GPU, one block above the other. We keep that layout:

* each block holds ``K / towers`` kernels in :func:`grid_shape` ``(rows, cols)``, ``cols = min(n,
  16)``, filled row by row (48 kernels -> 3 x 16, 64 -> 4 x 16, 96 -> 6 x 16);
* with ``towers=2`` the first ``K/2`` kernels (tower 1) form the top block and the last ``K/2``
  (tower 2) the bottom block, separated by ``gap`` extra background rows;
* each kernel is contrast-normalised on its own (min-max over its 3 channels to 0..255, as the
  paper's figure does; a constant kernel becomes mid-grey) and enlarged ``upscale`` times by pixel
  repetition, so a learned kernel looks exactly like its weights.

Pixel size of :func:`kernel_grid` (``th, tw = kh * upscale, kw * upscale``)::

    block_h = rows * th + (rows + 1) * pad      block_w = cols * tw + (cols + 1) * pad
    H = towers * block_h + (towers - 1) * gap   W = block_w

The default ``upscale`` makes a tile about 44 px (11x11 -> 4, 5x5 -> 8), so the paper's 96 kernels
give a 280 x 721 (H x W) image. :func:`save_kernel_figure` writes that array as the PNG pixel for
pixel, plus a ``TITLE_PX``-high strip on top when a title is given.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import torch
from matplotlib.figure import Figure

MAX_COLS = 16  # the paper's figure is 16 kernels wide
TARGET_TILE = 44  # default upscale aims for tiles about this many pixels wide
BACKGROUND = 255  # white separators between kernels and between the two towers
TITLE_PX = 28  # height of the title strip added by save_kernel_figure(title=...)
DPI = 100


def grid_shape(n: int, max_cols: int = MAX_COLS) -> tuple[int, int]:
    """``(rows, cols)`` of one block holding ``n`` kernels: ``cols = min(n, max_cols)``."""
    if n < 1:
        raise ValueError(f"need at least one kernel per block, got {n}")
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def default_upscale(kh: int, kw: int) -> int:
    """Pixel repetition that makes a ``kh x kw`` kernel about ``TARGET_TILE`` pixels wide."""
    return max(1, TARGET_TILE // max(kh, kw))


def normalise_kernels(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """Each kernel min-max scaled to 0..255 over its own 3 channels.

    ``(K, 3, h, w)`` weights -> uint8 ``(K, h, w, 3)`` tiles; a constant kernel becomes 128.
    """
    w = _as_kernels(weight)
    flat = w.reshape(w.shape[0], -1)
    lo = flat.min(axis=1)[:, None, None, None]
    span = (flat.max(axis=1) - flat.min(axis=1))[:, None, None, None]
    scaled = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1.0), 0.5)
    return np.rint(scaled * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def kernel_grid(
    weight: torch.Tensor | np.ndarray,
    towers: int = 1,
    pad: int = 1,
    upscale: int | None = None,
    gap: int = 8,
) -> np.ndarray:
    """The kernels of ``weight`` ``(K, 3, kh, kw)`` laid out as Figure 3: uint8 ``(H, W, 3)``.

    See the module docstring for the layout and the exact pixel size. ``K`` must divide by
    ``towers``; tower ``t`` holds kernels ``t*K/towers .. (t+1)*K/towers - 1``.
    """
    tiles = normalise_kernels(weight)
    k, kh, kw, _ = tiles.shape
    if towers < 1 or k % towers:
        raise ValueError(f"{k} kernels cannot be split evenly over towers={towers}")
    if pad < 0 or gap < 0:
        raise ValueError(f"pad and gap must be >= 0, got pad={pad}, gap={gap}")
    up = default_upscale(kh, kw) if upscale is None else upscale
    if up < 1:
        raise ValueError(f"upscale must be >= 1, got {up}")
    per_tower = k // towers
    rows, cols = grid_shape(per_tower)
    th, tw = kh * up, kw * up
    block_h = rows * th + (rows + 1) * pad
    block_w = cols * tw + (cols + 1) * pad
    out = np.full((towers * block_h + (towers - 1) * gap, block_w, 3), BACKGROUND, np.uint8)
    big = tiles.repeat(up, axis=1).repeat(up, axis=2)
    for i in range(k):
        tower, j = divmod(i, per_tower)
        r, c = divmod(j, cols)
        y = tower * (block_h + gap) + pad + r * (th + pad)
        x = pad + c * (tw + pad)
        out[y : y + th, x : x + tw] = big[i]
    return out


def save_kernel_figure(
    weight: torch.Tensor | np.ndarray,
    path: str | Path,
    towers: int = 1,
    title: str | None = None,
    **grid_kwargs,
) -> Path:
    """Write :func:`kernel_grid` as a PNG and return its path.

    Without a title the PNG is the grid pixel for pixel ``(H, W)``; with one it is
    ``(H + TITLE_PX, W)``, the title centred in the strip on top. ``grid_kwargs`` go to
    :func:`kernel_grid` (``pad``, ``upscale``, ``gap``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = kernel_grid(weight, towers=towers, **grid_kwargs)
    if title is None:
        mpimg.imsave(path, grid)
        return path
    h, w, _ = grid.shape
    # +0.5 px: Agg truncates figsize * dpi to an int, and n / 100 * 100 can fall just below n.
    fig = Figure(figsize=((w + 0.5) / DPI, (h + TITLE_PX + 0.5) / DPI), dpi=DPI)
    fig.patch.set_facecolor("white")
    fig.figimage(grid, xo=0, yo=0, origin="upper")
    fig.text(0.5, 1 - (TITLE_PX / 2) / (h + TITLE_PX), title, ha="center", va="center", fontsize=11)
    fig.savefig(path, dpi=DPI)
    return path


def _as_kernels(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().to("cpu", torch.float64).numpy()
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected conv1 weights of shape (K, 3, kh, kw), got {tuple(w.shape)}")
    return w
