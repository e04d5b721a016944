"""What every data module here shares: datasets over arrays or folders, loaders, statistics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet.data.folder import FolderIndex, load_rgb, resize_shorter_and_center_crop
from alexnet.data.stats import DatasetStats
from alexnet.data.transforms import build_transforms

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], torch.Tensor]


class ArrayDataset(Dataset):
    """Images held in memory as one uint8 (N, H, W, 3) array (CIFAR, synthetic data)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


class FolderDataset(Dataset):
    """Images decoded from disk on every read (ImageNet), after the paper's resize + centre crop
    to `size` x `size`; `size=None` keeps the original image (VGG's transforms rescale it)."""

    def __init__(self, index: FolderIndex, transform: Transform, size: int | None = 256) -> None:
        self.index, self.transform, self.size = index, transform, size

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> np.ndarray:
        img = load_rgb(self.index.paths[i])
        if self.size is None:
            return np.array(img, dtype=np.uint8)  # a writable copy, as torch wants
        return resize_shorter_and_center_crop(img, self.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(i)), self.index.labels[i]


def split_train_val(n: int, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of range(n); the seed is the data's, not the run's, so every run of
    an ablation grid sees the same validation images."""
    if not 0 <= val_size < n:
        raise ValueError(f"data.val_size={val_size} must be in [0, {n}) for {n} training images")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


class ClassificationDataModule(L.LightningDataModule):
    """Loaders, transforms and statistics; subclasses provide `setup` and `compute_stats`.

    Subclasses set `self.train_set`, `self.val_set`, `self.test_set` in `setup` and call
    `self.transforms()` for the transforms built from `aug` and the dataset statistics.
    """

    name = "dataset"

    def __init__(
        self,
        root: str | Path,
        num_classes: int,
        batch_size: int = 128,
        num_workers: int = 2,
        aug: Mapping[str, Any] | None = None,
        pin_memory: bool = True,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser().resolve()
        self.num_classes = num_classes
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        self.aug = dict(aug or {"name": "none"})
        self.pin_memory = pin_memory
        self.class_names: list[str] = []
        self._stats: DatasetStats | None = None

    # -- statistics --------------------------------------------------------------------------
    @property
    def stats_path(self) -> Path:
        return self.root / self.name / "stats.npz"

    def compute_stats(self) -> DatasetStats:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    def stats(self) -> DatasetStats:
        """The training set's mean image and RGB eigens, cached beside the data once computed."""
        if self._stats is None:
            if self.stats_path.exists():
                self._stats = DatasetStats.load(self.stats_path)
            else:
                self._stats = self.compute_stats()
                self.save_stats(self._stats)
        return self._stats

    def save_stats(self, stats: DatasetStats) -> None:
        try:
            stats.save(self.stats_path)
            log.info("dataset statistics written to %s", self.stats_path)
        except OSError as err:  # a read-only data folder is fine: recompute next time
            log.warning("could not cache dataset statistics at %s (%s)", self.stats_path, err)

    def transforms(self) -> tuple[Transform, Transform, Transform]:
        """(train, val, test) transforms. Ten-crop, multi-crop and dense testing apply to the test
        set only: the validation error that drives the plateau schedule uses the centre crop,
        many times cheaper."""
        train, test = build_transforms(self.aug, self.stats())
        val = test
        if self.aug.get("eval", "center") != "center":
            val = build_transforms({**self.aug, "eval": "center"}, self.stats())[1]
        return train, val, test

    def check_classes(self, found: int) -> None:
        if found != self.num_classes:
            raise ValueError(
                f"data.num_classes={self.num_classes} but {self.root / self.name} holds {found} "
                f"classes; set data.num_classes={found}"
            )

    # -- loaders -----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        # A transform whose outputs differ in size (VGG's dense evaluation) says how to batch them.
        collate_fn = getattr(getattr(dataset, "transform", None), "collate_fn", None)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)
