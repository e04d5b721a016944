"""The paper's figures as plain functions that write PNG files.

No Lightning, Hydra or W&B here: each function takes tensors/arrays (or a ``metrics.csv``) and a
path, draws with ``matplotlib.figure.Figure`` (no pyplot, so it is safe in threads and needs no
backend switching) and returns the path. Pixel sizes are fixed and documented per module.

* Figure 3, first-layer kernels: :mod:`~alexnet.figures.kernels`
* Figure 4 left, top-5 predictions: :mod:`~alexnet.figures.predictions`
* Figure 4 right, nearest neighbours in fc7 space: :mod:`~alexnet.figures.neighbours`
* learning curves from a CSVLogger file: :mod:`~alexnet.figures.curves`
* confusion matrix and per-class error: :mod:`~alexnet.figures.confusion`
"""

from alexnet.figures.confusion import confusion_figure, per_class_error
from alexnet.figures.curves import learning_curves, read_metrics_csv
from alexnet.figures.kernels import grid_shape, kernel_grid, normalise_kernels, save_kernel_figure
from alexnet.figures.neighbours import extract_features, nearest_neighbours, neighbours_figure
from alexnet.figures.predictions import top5, top5_figure

__all__ = [
    "confusion_figure",
    "extract_features",
    "grid_shape",
    "kernel_grid",
    "learning_curves",
    "nearest_neighbours",
    "neighbours_figure",
    "normalise_kernels",
    "per_class_error",
    "read_metrics_csv",
    "save_kernel_figure",
    "top5",
    "top5_figure",
]
