"""Figure 4 (left) of the paper: test images with the network's five most probable labels.

"Eight ILSVRC-2010 test images and the five labels considered most probable by our model. The
correct label is written under each image, and the probability assigned to the correct label is
also shown with a red bar (if it happens to be in the top 5)."

:func:`top5_figure` draws one cell per image, ``ncols`` cells to a row: the image, its true label
under it, and below that a horizontal bar chart of the top-5 labels, most probable on top, the bar
of the true label red and the others grey-blue. Each cell is ``CELL_W x CELL_H`` = 250 x 350 px at
100 dpi, so the PNG is ``(rows * 350, cols * 250)`` pixels (H x W) with ``cols = min(ncols, N)``
and ``rows = ceil(N / cols)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

CELL_W, CELL_H = 250, 350  # pixels per image cell (multiples of 25: exact in inches at 100 dpi)
DPI = 100
CORRECT_COLOUR = "#d62728"  # the paper's red bar
OTHER_COLOUR = "#9ab8d6"


def top5(probs: torch.Tensor | np.ndarray, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest probabilities per row of ``probs`` ``(N, C)`` and their class indices,
    both ``(N, k)`` tensors, most probable first."""
    p = probs if isinstance(probs, torch.Tensor) else torch.as_tensor(np.asarray(probs))
    if p.ndim != 2:
        raise ValueError(f"expected probabilities of shape (N, C), got {tuple(p.shape)}")
    values, indices = torch.topk(p.detach().float(), k, dim=1, largest=True, sorted=True)
    return values, indices


def top5_figure(
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    probs: torch.Tensor | np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    ncols: int = 4,
) -> Path:
    """Write the Figure 4 (left) panel for uint8 ``images`` ``(N, H, W, 3)``, true ``labels``
    ``(N,)`` and softmax ``probs`` ``(N, C)``; returns the PNG path. Uses the top
    ``min(5, C)`` labels."""
    imgs = as_display_images(images)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(int)
    n = imgs.shape[0]
    if n == 0 or y.shape != (n,) or len(probs) != n:
        raise ValueError(
            f"need N >= 1 images with N labels and N prob rows, got {n}, {y.shape}, {len(probs)}"
        )
    values, indices = top5(probs, k=min(5, np.shape(probs)[1]))
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * CELL_W / DPI, rows * CELL_H / DPI), dpi=DPI)
    fig.patch.set_facecolor("white")
    grid = fig.add_gridspec(
        rows * 2,
        cols,
        height_ratios=[3, 2] * rows,
        left=0.03,
        right=0.97,
        top=0.98,
        bottom=0.02,
        hspace=0.35,
        wspace=0.15,
    )
    for i in range(n):
        r, c = divmod(i, cols)
        _image(fig.add_subplot(grid[2 * r, c]), imgs[i], class_names[y[i]])
        bars = fig.add_subplot(grid[2 * r + 1, c])
        _bars(bars, values[i].tolist(), indices[i].tolist(), int(y[i]), class_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _image(ax, image: np.ndarray, true_name: str) -> None:
    """The test image with its correct label written under it."""
    ax.imshow(image, interpolation="bilinear")
    ax.set_axis_off()
    ax.text(
        0.5,
        -0.03,
        true_name,
        transform=ax.transAxes,
        ha="center",
        va="top",
        fontsize=9,
        fontweight="bold",
    )


def _bars(ax, values: list[float], indices: list[int], true: int, names: Sequence[str]) -> None:
    """Top-k bars, most probable on top; the true label's bar red."""
    rank = np.arange(len(values))
    colours = [CORRECT_COLOUR if j == true else OTHER_COLOUR for j in indices]
    ax.barh(rank, values, color=colours, height=0.8)
    for y, (v, j) in enumerate(zip(values, indices, strict=True)):
        # The label sits on the bar, as in the paper, so long class names need no margin.
        ax.text(0.02, y, f"{names[j]}  {v:.2f}", va="center", ha="left", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(len(values) - 0.5, -0.5)  # most probable on top
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def as_display_images(images: torch.Tensor | np.ndarray, ndim: int = 4) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` array with ``ndim`` dims from a tensor or array of 0..255 integers.

    These are the original display images, not network inputs (float, mean-subtracted), which
    are refused rather than silently wrapped into 0..255.
    """
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.ndim != ndim or a.shape[-1] != 3:
        raise ValueError(f"expected {ndim}-d images (..., H, W, 3), got shape {tuple(a.shape)}")
    if a.dtype.kind not in "ui":
        raise ValueError(f"expected uint8 display images (0..255), got dtype {a.dtype}")
    return a.astype(np.uint8, copy=False)
