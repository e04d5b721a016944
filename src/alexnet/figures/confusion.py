"""Where the errors go: a confusion-matrix picture and per-class top-1 error.

The confusion matrix is ``(C, C)`` counts, rows = true class, columns = predicted class, as
``torchmetrics`` returns it (``MulticlassConfusionMatrix(normalize=None)``).

:func:`confusion_figure` writes an 800 x 700 px PNG (8 x 7 in at 100 dpi) whatever ``C``: with
``normalize=True`` each row is divided by its count (rows with no samples stay 0), so the diagonal
is per-class recall; class names label the axes when ``C <= 30`` and every cell is annotated when
``C <= 20``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

FIG_W, FIG_H = 800, 700  # pixels
DPI = 100
MAX_ANNOTATED = 20  # classes up to which every cell gets its number written in
MAX_TICK_LABELS = 30  # classes up to which the axes carry class names


def per_class_error(
    confmat: torch.Tensor | np.ndarray,
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """One row per class: ``{"class": name, "n": samples, "top1_err": 1 - correct / n}``.

    ``n`` is the row sum (samples of that true class); a class with ``n = 0`` gets ``nan`` error.
    Names default to the class index as a string.
    """
    cm = _as_confmat(confmat)
    names = _names(class_names, cm.shape[0])
    n = cm.sum(axis=1)
    correct = np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(n > 0, 1.0 - correct / np.maximum(n, 1), np.nan)
    return [{"class": names[c], "n": int(n[c]), "top1_err": float(err[c])} for c in range(len(n))]


def confusion_figure(
    confmat: torch.Tensor | np.ndarray,
    class_names: Sequence[str] | None,
    path: str | Path,
    normalize: bool = True,
) -> Path:
    """Write the confusion matrix as a heat map PNG (see the module docstring); returns the path."""
    cm = _as_confmat(confmat)
    c = cm.shape[0]
    names = _names(class_names, c)
    if normalize:
        shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        vmax = 1.0
    else:
        shown = cm
        vmax = max(float(shown.max()), 1.0)
    fig = Figure(figsize=(FIG_W / DPI, FIG_H / DPI), dpi=DPI)
    fig.patch.set_facecolor("white")
    ax = fig.add_axes((0.2, 0.2, 0.62, 0.72))
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(
        im,
        cax=fig.add_axes((0.85, 0.2, 0.03, 0.72)),
        label="fraction of true class" if normalize else "count",
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix" + (" (rows normalised)" if normalize else ""))
    if c <= MAX_TICK_LABELS:
        ax.set_xticks(range(c), names, rotation=90, fontsize=8)
        ax.set_yticks(range(c), names, fontsize=8)
    if c <= MAX_ANNOTATED:
        _annotate(ax, shown, cm, normalize, vmax)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _annotate(ax, shown: np.ndarray, cm: np.ndarray, normalize: bool, vmax: float) -> None:
    """Write each cell's value (fraction or count) in the cell."""
    size = 8 if shown.shape[0] <= 10 else 6
    for (i, j), v in np.ndenumerate(shown):
        text = f"{v:.2f}" if normalize else f"{cm[i, j]:g}"
        colour = "white" if v > 0.5 * vmax else "black"  # stay legible on dark cells
        ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour)


def _as_confmat(confmat: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(confmat, torch.Tensor):
        confmat = confmat.detach().cpu().numpy()
    cm = np.asarray(confmat)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"expected a square (C, C) confusion matrix, got {tuple(cm.shape)}")
    return cm.astype(np.float64)  # counts; float so row-normalising needs no casts


def _names(class_names: Sequence[str] | None, c: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(c)]
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for a {c}-class confusion matrix")
    return list(class_names)
