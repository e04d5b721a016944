"""Render every figure for one trained network into one folder: :func:`render_figures`.

Used at the end of training (``train.py``) and by ``python -m alexnet.figures`` for any
checkpoint. It takes plain objects -- the LightningModule (``Classifier``: its ``net`` and its
``forward``, which averages ten crops when the test transform makes them) and a data module after
``setup`` -- and writes, into ``out_dir``:

===========================  =========================================================
``kernels.png``              Figure 3: conv1's kernels, tower 1 above tower 2
``top5.png``                 Figure 4 left: test images, true label, top-5 bars
``neighbours.png``           Figure 4 right: test images and their nearest training
                             images in the last hidden layer (``net.embed``)
``confusion.png``            confusion matrix over the scored test images
``per_class_error.csv``      per-class top-1 error (also returned as a table)
``learning_curves.png``      from ``metrics_csv`` (the run's CSV log), when given
===========================  =========================================================

Two passes over data cost time; both are batched DataLoader passes on ``device``:

* the test pass scores ``test_images`` test images (all by default) with the test transform,
  exactly as the test loop does (ten crops when ``aug.eval=ten_crop``), for the confusion
  matrix, the per-class errors and Figure 4 left;
* the feature pass runs ``net.embed`` over ``train_images`` training images (a fixed random
  subset when the training set is larger) through the *evaluation* transform (centre crop, no
  flips, no lighting), so a neighbour is the image the network sees, not a random crop of it.

Which images: a permutation of the scored test images drawn from ``seed``; its first
``examples`` are Figure 4 left's images and its first ``queries`` are Figure 4 right's.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchmetrics.classification import MulticlassConfusionMatrix

from alexnet.figures.confusion import confusion_figure, per_class_error
from alexnet.figures.curves import learning_curves
from alexnet.figures.display import dataset_labels, display_images, split_dataset, with_transform
from alexnet.figures.kernels import save_kernel_figure
from alexnet.figures.neighbours import extract_features, nearest_neighbours, neighbours_figure
from alexnet.figures.predictions import top5_figure

log = logging.getLogger(__name__)

# Figure name -> file name in out_dir; also the keys of FigureSet.paths and the W&B image keys.
FILES = {
    "kernels": "kernels.png",
    "top5": "top5.png",
    "neighbours": "neighbours.png",
    "confusion": "confusion.png",
    "learning_curves": "learning_curves.png",
}
PER_CLASS_CSV = "per_class_error.csv"


@dataclass(frozen=True)
class RenderOptions:
    """How much to draw and from how many images; the keys of the ``figures`` config block."""

    examples: int = 8  # Figure 4 left: test images with their top-5 labels (the paper shows 8)
    queries: int = 5  # Figure 4 right: test images whose neighbours are shown (the paper: 5)
    neighbours: int = 6  # training images per query (the paper: 6)
    # searched for neighbours; None: the whole training set; "auto": 50,000 on a GPU and
    # CPU_TRAIN_IMAGES on a CPU, where the feature pass over 50,000 took ~3 minutes on 2 cores
    train_images: int | str | None = "auto"
    test_images: int | None = None  # scored for the confusion matrix; None: the whole test set
    device: str = "auto"  # auto: cuda when available, else cpu
    seed: int = 0  # picks the example images and the subsets

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> RenderOptions:
        """The known keys of ``config``; others (``enabled``, ...) belong to the caller."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(config or {}).items() if k in names})

    def check(self) -> RenderOptions:
        """Raise ValueError naming the bad key; returns self."""
        for key in ("examples", "queries", "neighbours"):
            if getattr(self, key) < 1:
                raise ValueError(f"figures.{key}={getattr(self, key)} must be at least 1")
        for key in ("train_images", "test_images"):
            value = getattr(self, key)
            if key == "train_images" and value == "auto":
                continue
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"figures.{key}={value} must be at least 1, or null for all")
        return self


CPU_TRAIN_IMAGES = 5_000
GPU_TRAIN_IMAGES = 50_000


def train_images_for(options: RenderOptions, device: torch.device) -> int | None:
    """How many training images the neighbour search embeds on ``device``."""
    if options.train_images != "auto":
        return options.train_images
    return GPU_TRAIN_IMAGES if device.type == "cuda" else CPU_TRAIN_IMAGES


@dataclass
class FigureSet:
    """What :func:`render_figures` wrote: PNG paths, tables (lists of row dicts), timings."""

    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    test_top1_err: float | None = None  # over the scored test images
    # Figure 4 right as indices: test images (Q,) and their nearest training images (Q, k),
    # indices into the data module's test_set and train_set.
    query_indices: np.ndarray | None = None
    neighbour_indices: np.ndarray | None = None


def render_figures(
    module: nn.Module,
    datamodule,
    out_dir: str | Path,
    options: RenderOptions | None = None,
    metrics_csv: str | Path | None = None,
) -> FigureSet:
    """Write the figures listed in the module docstring into ``out_dir``; returns a FigureSet.

    ``module`` is put on ``options.device`` and in eval mode for the passes; its device and
    mode are restored afterwards.
    """
    opts = (options or RenderOptions()).check()
    out = FigureSet(Path(out_dir))
    out.out_dir.mkdir(parents=True, exist_ok=True)
    net: nn.Module = module.net
    _check_classes(module, datamodule)
    device = _device(opts.device)
    before = next(module.parameters()).device, module.training
    module.to(device).eval()
    train_images = train_images_for(opts, device)
    log.info("figures: scoring %s test images and embedding %s training images on %s for "
             "the neighbour search (figures.train_images, figures.test_images set how many; "
             "figures.enabled=false skips this)", opts.test_images or "all", train_images or "all",
             device.type)
    try:
        with _timed(out, "kernels"):
            out.paths["kernels"] = draw_kernels(net, towers_of(module), out.out_dir)
        test_set = split_dataset(datamodule, "test")
        scored = _sample(len(test_set), opts.test_images, opts.seed)
        order = scored[np.random.default_rng(opts.seed).permutation(len(scored))]
        names = list(datamodule.class_names) or [str(c) for c in range(datamodule.num_classes)]
        draw_test_figures(module, datamodule, scored, order[: opts.examples], device, out, names)
        out.query_indices = order[: opts.queries]
        out.paths["neighbours"], out.neighbour_indices = draw_neighbours(
            module.net, datamodule, out.query_indices, train_images, opts, device, out, names)
        if metrics_csv is not None and Path(metrics_csv).is_file():
            with _timed(out, "learning_curves"):
                try:
                    out.paths["learning_curves"] = learning_curves(
                        metrics_csv, out.out_dir / FILES["learning_curves"])
                except ValueError as err:  # a run stopped before its first logged step
                    log.warning("no learning curves: %s", err)
    finally:
        module.to(before[0]).train(before[1])
    log.info("figures written to %s (%s)", out.out_dir,
             ", ".join(f"{k} {v:.1f}s" for k, v in out.seconds.items()))
    return out


# -- the pieces ------------------------------------------------------------------------------


def first_conv(net: nn.Module) -> nn.Conv2d:
    """``net.conv1`` (AlexNet variants) or else the first Conv2d in module order (VGG)."""
    conv = getattr(net, "conv1", None)
    if isinstance(conv, nn.Conv2d):
        return conv
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError(f"{type(net).__name__} has no Conv2d layer to draw kernels from")


def towers_of(module: nn.Module) -> int:
    """The ``towers`` hyper-parameter of the module's network (1 for nets without towers)."""
    hparams = getattr(module, "hparams", None) or {}
    return int(dict(hparams.get("model") or {}).get("towers", 1))


def draw_kernels(net: nn.Module, towers: int, out_dir: Path, path: Path | None = None,
                 title: str | None = None) -> Path:
    """Figure 3 for ``net``'s first conv layer; titled with its shape unless ``title`` is given."""
    weight = first_conv(net).weight
    k, c, kh, kw = weight.shape
    if title is None:
        title = f"first-layer kernels: {k} x {kh}x{kw}x{c}"
        title += f", tower 1 above tower {towers}" if towers > 1 else ""
    return save_kernel_figure(weight, path or out_dir / FILES["kernels"], towers=towers,
                              title=title)


def draw_test_figures(module: nn.Module, datamodule, scored: np.ndarray, shown: np.ndarray,
                      device: torch.device, out: FigureSet, names: list[str]) -> None:
    """One pass over the ``scored`` test images, then the confusion matrix, the per-class
    errors and Figure 4 left for the test images ``shown`` (a subset of ``scored``)."""
    test_set = split_dataset(datamodule, "test")
    position = {int(i): p for p, i in enumerate(scored)}
    with _timed(out, "test_pass"):
        confmat, probs = score(module, Subset(test_set, scored.tolist()), datamodule.num_classes,
                               np.array([position[int(i)] for i in shown], dtype=np.int64),
                               _batch_size(datamodule), _workers(datamodule), device)
    out.test_top1_err = float(1 - confmat.diag().sum() / confmat.sum().clamp_min(1))
    with _timed(out, "confusion"):
        out.paths["confusion"] = confusion_figure(confmat, names, out.out_dir / FILES["confusion"])
        out.tables["per_class_error"] = per_class_error(confmat, names)
        out.paths["per_class_error"] = write_rows(out.tables["per_class_error"],
                                                  out.out_dir / PER_CLASS_CSV)
    with _timed(out, "top5"):
        out.paths["top5"] = top5_figure(display_images(test_set, shown),
                                        dataset_labels(test_set)[shown], probs, names,
                                        out.out_dir / FILES["top5"])


@torch.inference_mode()
def score(module: nn.Module, dataset: Dataset, num_classes: int, keep: np.ndarray,
          batch_size: int, num_workers: int, device: torch.device
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Confusion matrix ``(C, C)`` over ``dataset`` and the softmax rows of positions ``keep``
    (in ``keep``'s order). ``module(x)`` gives logits, or log-probabilities for ten-crop input;
    the softmax of either is the prediction."""
    confmat = MulticlassConfusionMatrix(num_classes).to(device)
    wanted = {int(p): i for i, p in enumerate(keep)}
    probs = torch.zeros(len(keep), num_classes)
    start = 0
    for x, y in _progress(_loader(dataset, batch_size, num_workers), "figures: test pass"):
        p = module(x.to(device)).float().softmax(dim=1)
        confmat.update(p, y.to(device))
        for j in range(len(y)):
            if start + j in wanted:
                probs[wanted[start + j]] = p[j].cpu()
        start += len(y)
    return confmat.compute().cpu(), probs


def draw_neighbours(net: nn.Module, datamodule, query_idx: np.ndarray, train_images: int | None,
                    opts: RenderOptions, device: torch.device, out: FigureSet, names: list[str]
                    ) -> tuple[Path, np.ndarray]:
    """Figure 4 right: features of training and query images through the evaluation
    transform, exact Euclidean search, then the picture. Returns the PNG path and the
    neighbours' ``train_set`` indices ``(Q, k)``; times go into ``out.seconds``."""
    train_set, test_set = split_dataset(datamodule, "train"), split_dataset(datamodule, "test")
    eval_tf = split_dataset(datamodule, "val").transform  # centre crop even under ten_crop
    database = _sample(len(train_set), train_images, opts.seed + 1)
    bs, workers = _batch_size(datamodule), _workers(datamodule)
    with _timed(out, "train_features"):
        loader = _loader(Subset(with_transform(train_set, eval_tf), database.tolist()), bs,
                         workers)
        feats = extract_features(net.embed, _progress(loader, "figures: training features"),
                                 device)
    with _timed(out, "neighbours"):
        queries = extract_features(net.embed, _loader(
            Subset(with_transform(test_set, eval_tf), query_idx.tolist()), bs, 0), device)
        # Distances do not change under a shift; centring keeps ||q||^2 - 2q.d + ||d||^2 from
        # cancelling catastrophically in fp32 when all features share a large common part.
        centre = feats.mean(dim=0)
        k = min(opts.neighbours, len(database))
        _, found = nearest_neighbours((queries - centre).to(device), feats - centre, k=k)
        found = database[found.cpu().numpy()]  # (Q, k) indices into train_set
        images = display_images(train_set, found.reshape(-1))
        path = neighbours_figure(
            display_images(test_set, query_idx), images.reshape(*found.shape, *images.shape[1:]),
            out.out_dir / FILES["neighbours"], query_labels=dataset_labels(test_set)[query_idx],
            neighbour_labels=dataset_labels(train_set)[found], class_names=names)
    return path, found


def write_rows(rows: list[dict], path: Path) -> Path:
    """Rows of dicts as a CSV file with a header (written whole, then renamed into place)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


# -- helpers ---------------------------------------------------------------------------------


def _sample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of ``range(n)`` or a sorted random ``limit`` of it (sorted: files read in order)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _progress(loader: DataLoader, desc: str):
    """A progress bar over ``loader`` on a terminal (none in logs and CI)."""
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False, disable=None)


def _loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available())


def _batch_size(datamodule) -> int:
    return int(getattr(datamodule, "eval_batch_size", None) or datamodule.batch_size)


def _workers(datamodule) -> int:
    return int(getattr(datamodule, "num_workers", 0))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_classes(module: nn.Module, datamodule) -> None:
    hparams = getattr(module, "hparams", None) or {}
    trained = dict(hparams.get("model") or {}).get("num_classes")
    if trained is not None and int(trained) != datamodule.num_classes:
        raise ValueError(
            f"the checkpoint's network has {trained} classes but the data has "
            f"{datamodule.num_classes}; pass the data it was trained on (e.g. data=imagenet)"
        )


class _timed:
    """``with _timed(figure_set, "name"):`` adds the block's wall time to ``seconds[name]``."""

    def __init__(self, out: FigureSet, name: str) -> None:
        self.out, self.name = out, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        elapsed = time.perf_counter() - self.start
        self.out.seconds[self.name] = self.out.seconds.get(self.name, 0.0) + elapsed
