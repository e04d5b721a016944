"""Figure 4 (right) of the paper: training images nearest to test images in feature space.

"Five ILSVRC-2010 test images in the first column. The remaining columns show the six training
images that produce feature vectors in the last hidden layer with the smallest Euclidean distance
from the feature vector for the test image." Three steps, one function each:

1. :func:`extract_features` runs the network's ``embed`` (fc7 activations) over a loader;
2. :func:`nearest_neighbours` finds the ``k`` closest database rows by Euclidean distance, a chunk
   of the database at a time, so memory stays bounded (50,000 x 2048 CIFAR features are 400 MB;
   the distance matrix is never built whole);
3. :func:`neighbours_figure` draws one row per query: the query, a gap, then its neighbours.

Scaling to ImageNet: fc7 features of all 1.28M training images are 1.28M x 4096 x 4 B = 21 GB in
fp32. Either search a random subset of the training set (the figure only needs plausible
neighbours), store the features in fp16 (``extract_features(..., dtype=torch.float16)``; halves
memory, distances are still computed in fp32 chunk by chunk), or do what the paper suggests:
train an auto-encoder to compress the vectors to short binary codes and compare by Hamming
distance, which is far cheaper than Euclidean distance on 4096-d real vectors.

PNG size of :func:`neighbours_figure`: each image cell is ``CELL_W x CELL_H`` = 125 x 150 px at
100 dpi (the image and a label line under it), so ``Q`` queries with ``k`` neighbours give
``(Q * 150, (k + 1) * 125)`` pixels (H x W).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from alexnet.figures.predictions import as_display_images

CELL_W, CELL_H = 125, 150  # pixels per image cell (multiples of 25: exact in inches at 100 dpi)
DPI = 100
SAME_COLOUR, OTHER_COLOUR = "#2ca02c", "#d62728"  # neighbour label agrees / disagrees with query


def extract_features(
    embed: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor | Sequence],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    with_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Features ``(N, D)`` of every input in ``batches``, on the CPU, in ``dtype``.

    ``batches`` yields tensors or ``(inputs, labels, ...)`` tuples (a DataLoader does). Each
    input batch is moved to ``device``; the model must already be there. If ``embed`` is an
    ``nn.Module`` or a bound method of one (``model.embed``) the module is put in eval mode for the
    pass (dropout off) and its previous mode restored; any other callable must be in eval mode
    already. With ``with_labels=True`` returns ``(features, labels)``, labels ``(N,)`` int64,
    which needs every batch to carry labels.
    """
    module = embed if isinstance(embed, nn.Module) else getattr(embed, "__self__", None)
    module = module if isinstance(module, nn.Module) else None
    was_training = module.training if module is not None else False
    feats, labels = [], []
    try:
        if module is not None:
            module.eval()
        with torch.inference_mode():
            for batch in batches:
                x, y = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1:])
                out = embed(x.to(device))
                if out.ndim < 2:
                    raise ValueError(f"embed must return (N, D) features, got {tuple(out.shape)}")
                feats.append(out.flatten(1).to("cpu", dtype))
                if with_labels:
                    if not y:
                        raise ValueError("with_labels=True needs (inputs, labels) batches")
                    labels.append(torch.as_tensor(y[0]).reshape(-1).to("cpu", torch.int64))
    finally:
        if module is not None:
            module.train(was_training)
    if not feats:
        raise ValueError("extract_features got no batches")
    out = torch.cat(feats)
    return (out, torch.cat(labels)) if with_labels else out


def nearest_neighbours(
    queries: torch.Tensor,
    database: torch.Tensor,
    k: int = 6,
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` database rows closest to each query by Euclidean distance.

    Returns ``(distances, indices)``, both ``(Q, k)``, nearest first; indices into ``database``.
    Nothing is excluded (a query that is also in the database finds itself at distance ~0).
    Works ``chunk`` queries x ``chunk`` database rows at a time on the queries' device, using
    ``||q||^2 - 2 q.d + ||d||^2`` in at least fp32, and keeps a running top-k across chunks, so
    peak memory is about ``chunk^2`` floats whatever ``N``.
    """
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"need (Q, D) queries and (N, D) database, got {tuple(queries.shape)} "
            f"and {tuple(database.shape)}"
        )
    n = database.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (database size), got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    dtype = torch.promote_types(queries.dtype, torch.float32)
    dists, idxs = [], []
    for q0 in range(0, queries.shape[0], chunk):
        d, i = _topk_over_database(queries[q0 : q0 + chunk].to(dtype), database, k, chunk)
        dists.append(d)
        idxs.append(i)
    return torch.cat(dists).sqrt(), torch.cat(idxs)


def _topk_over_database(
    q: torch.Tensor, database: torch.Tensor, k: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances and indices of the ``k`` nearest rows, merged chunk by chunk."""
    q_sq = q.pow(2).sum(1, keepdim=True)
    best_d = torch.empty(q.shape[0], 0, dtype=q.dtype, device=q.device)
    best_i = torch.empty(q.shape[0], 0, dtype=torch.int64, device=q.device)
    for d0 in range(0, database.shape[0], chunk):
        d = database[d0 : d0 + chunk].to(q.device, q.dtype)
        # Rounding can make the expansion slightly negative for (near-)identical vectors.
        sq = (q_sq - 2 * q @ d.T + d.pow(2).sum(1)).clamp_min_(0)
        cand_d, cand_i = torch.topk(sq, min(k, d.shape[0]), dim=1, largest=False)
        best_d = torch.cat([best_d, cand_d], dim=1)
        best_i = torch.cat([best_i, cand_i + d0], dim=1)
        best_d, order = torch.topk(best_d, min(k, best_d.shape[1]), dim=1, largest=False)
        best_i = best_i.gather(1, order)
    return best_d, best_i


def neighbours_figure(
    query_images: torch.Tensor | np.ndarray,
    neighbour_images: torch.Tensor | np.ndarray,
    path: str | Path,
    query_labels: Sequence[int] | torch.Tensor | None = None,
    neighbour_labels: Sequence[Sequence[int]] | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write Figure 4 (right): row ``q`` shows ``query_images[q]`` (uint8 ``(Q, H, W, 3)``) and
    then ``neighbour_images[q]`` (uint8 ``(Q, k, H, W, 3)``), nearest first; returns the PNG path.

    With labels and ``class_names`` each image gets its class name underneath, a neighbour's in
    green when it matches the query's label and red when not; with labels but no names the
    label numbers are shown.
    """
    queries = as_display_images(query_images, ndim=4)
    neigh = as_display_images(neighbour_images, ndim=5)
    q, k = neigh.shape[:2]
    if queries.shape[0] != q or q == 0:
        raise ValueError(f"need Q >= 1 queries and Q neighbour rows, got {queries.shape[0]}, {q}")
    ql = None if query_labels is None else np.asarray(query_labels, dtype=int).reshape(q)
    nl = None if neighbour_labels is None else np.asarray(neighbour_labels, dtype=int).reshape(q, k)
    fig = Figure(figsize=((k + 1) * CELL_W / DPI, q * CELL_H / DPI), dpi=DPI)
    fig.patch.set_facecolor("white")
    # A wider gap after the first column separates the query from its neighbours.
    grid = fig.add_gridspec(
        q,
        k + 2,
        width_ratios=[1, 0.12] + [1] * k,
        left=0.01,
        right=0.99,
        top=0.98,
        bottom=0.06,
        wspace=0.05,
        hspace=0.25,
    )
    for r in range(q):
        _cell(fig.add_subplot(grid[r, 0]), queries[r], _name(ql, r, None, class_names), "black")
        for j in range(k):
            name = _name(nl, r, j, class_names)
            same = ql is not None and nl is not None and nl[r, j] == ql[r]
            colour = SAME_COLOUR if same else OTHER_COLOUR if ql is not None else "black"
            _cell(fig.add_subplot(grid[r, j + 2]), neigh[r, j], name, colour)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _name(labels: np.ndarray | None, r: int, j: int | None, names: Sequence[str] | None) -> str:
    if labels is None:
        return ""
    label = labels[r] if j is None else labels[r, j]
    return names[label] if names is not None else str(label)


def _cell(ax, image: np.ndarray, text: str, colour: str) -> None:
    ax.imshow(image, interpolation="bilinear")
    ax.set_axis_off()
    if text:
        ax.text(
            0.5,
            -0.04,
            text,
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=7,
            color=colour,
        )
