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
    """Images decoded from disk on every read (ImageNet), after the paper's resize + centre crop."""

    def __init__(self, index: FolderIndex, transform: Transform, size: int = 256) -> None:
        self.index, self.transform, self.size = index, transform, size

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> np.ndarray:
        return resize_shorter_and_center_crop(load_rgb(self.index.paths[i]), self.size)

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
        gpu_resident: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser().resolve()
        self.num_classes = num_classes
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        self.aug = dict(aug or {"name": "none"})
        self.pin_memory = pin_memory
        # All uint8 images on the model's device, augmented there (alexnet.data.device_loader).
        self.gpu_resident = gpu_resident
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
        """(train, val, test) transforms. Ten-crop testing applies to the test set only: the
        validation error that drives the plateau schedule uses the centre crop, 10x cheaper."""
        train, test = build_transforms(self.aug, self.stats())
        val = test
        if self.aug.get("eval") == "ten_crop":
            val = build_transforms({**self.aug, "eval": "center"}, self.stats())[1]
        return train, val, test

    def check_classes(self, found: int) -> None:
        if found != self.num_classes:
            raise ValueError(
                f"data.num_classes={self.num_classes} but {self.root / self.name} holds {found} "
                f"classes; set data.num_classes={found}"
            )

    # -- loaders -----------------------------------------------------------------------------
    def model_device(self) -> torch.device:
        """Where the LightningModule being trained is (CPU when no trainer is attached)."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return module.device if module is not None else torch.device("cpu")

    def _device_loader(self, dataset: Dataset, shuffle: bool, batch_size: int):
        """A loader that makes batches on the model's device, or None for a DataLoader."""
        if not self.gpu_resident:
            return None
        if not isinstance(dataset, ArrayDataset):
            raise ValueError(
                f"data.gpu_resident=true needs a dataset held in memory (CIFAR-10, synthetic), "
                f"not {self.name}; for ImageNet use data.store=true"
            )
        from alexnet.data.batch_transforms import batch_transform_of
        from alexnet.data.device_loader import DeviceLoader

        trainer = self.trainer
        return DeviceLoader(
            dataset.images, dataset.labels, batch_transform_of(dataset.transform), batch_size,
            shuffle=shuffle, drop_last=shuffle, device=self.model_device,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        device_loader = self._device_loader(dataset, shuffle, batch_size)
        if device_loader is not None:
            return device_loader
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)
