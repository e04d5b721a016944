"""Display images and labels of a split, whatever holds them: memory or files on disk.

The figures show the *original* images (uint8 ``(H, W, 3)``), not network inputs (float,
mean-subtracted, cropped). The data modules keep them in two ways:

* :class:`~alexnet.data.base.ArrayDataset` (CIFAR-10, synthetic) holds them as one uint8
  ``.images`` array;
* :class:`~alexnet.data.base.FolderDataset` (ImageNet) decodes file ``i`` on every read;
  ``.load(i)`` gives the paper's 256 x 256 centre crop;
* :class:`~alexnet.data.store.StoreDataset` (ImageNet with ``data.store=true``) holds those
  centre crops re-encoded in the JPEG store; ``.store.decode(i)`` gives one.

:func:`display_images` reads either, and a ``torch.utils.data.Subset`` of either. The datasets are
the data module's ``train_set``, ``val_set`` and ``test_set`` (:func:`split_dataset`), not
``datamodule.arrays(split)``: for CIFAR-10 ``train_set`` is the official training set minus the
validation images, and neighbours must index the images the network was trained on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from alexnet.data.base import ArrayDataset, FolderDataset
from alexnet.data.store import StoreDataset

SPLITS = ("train", "val", "test")


def split_dataset(datamodule, split: str) -> Dataset:
    """``datamodule.<split>_set`` (after ``setup``) for ``split`` in train, val, test."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; use one of {', '.join(SPLITS)}")
    dataset = getattr(datamodule, f"{split}_set", None)
    if dataset is None:
        raise ValueError(f"the data module has no {split}_set; call datamodule.setup() first")
    return dataset


def display_images(dataset: Dataset, indices: Sequence[int]) -> np.ndarray:
    """uint8 ``(len(indices), H, W, 3)``: the untransformed images ``indices`` of ``dataset``."""
    base, idx = _unwrap(dataset, indices)
    if isinstance(base, ArrayDataset):
        return np.asarray(base.images[idx], dtype=np.uint8)
    if isinstance(base, FolderDataset):
        return np.stack([base.load(int(i)) for i in idx]).astype(np.uint8, copy=False)
    if isinstance(base, StoreDataset):
        return np.stack([base.store.decode(int(i)) for i in idx])
    raise TypeError(f"cannot read display images from a {type(base).__name__}")


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """int64 ``(len(dataset),)`` labels, read without decoding any image."""
    base, idx = _unwrap(dataset, range(len(dataset)))
    if isinstance(base, ArrayDataset):
        return np.asarray(base.labels, dtype=np.int64)[idx]
    if isinstance(base, FolderDataset):
        return np.asarray(base.index.labels, dtype=np.int64)[idx]
    if isinstance(base, StoreDataset):
        return np.asarray(base.store.labels, dtype=np.int64)[idx]
    raise TypeError(f"cannot read labels from a {type(base).__name__}")


def with_transform(dataset: Dataset, transform: Callable) -> Dataset:
    """A shallow copy of ``dataset`` (or of the dataset a Subset wraps) using ``transform``.

    The images are shared, not copied. Used to run the training images through the
    deterministic evaluation transform (centre crop, no flips or lighting) for features.
    """
    if isinstance(dataset, Subset):
        return Subset(with_transform(dataset.dataset, transform), dataset.indices)
    if not hasattr(dataset, "transform"):
        raise TypeError(f"a {type(dataset).__name__} has no transform to replace")
    out = copy.copy(dataset)
    out.transform = transform
    return out


def _unwrap(dataset: Dataset, indices: Sequence[int]) -> tuple[Dataset, np.ndarray]:
    """The innermost dataset and ``indices`` mapped into it through any Subsets."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    while isinstance(dataset, Subset):
        idx = np.asarray(dataset.indices, dtype=np.int64)[idx]
        dataset = dataset.dataset
    return dataset, idx
