"""What every data module here shares: datasets over arrays or folders, loaders, statistics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet.data.augment.presets import Augmentation, PlainAug
from alexnet.data.folder import DataError, FolderIndex, resize_shorter_and_center_crop
from alexnet.data.images import MAX_PIXELS, BadImage, ImageRecord, open_rgb
from alexnet.data.order import KeyedItems, TrainOrder, order_state, train_order, worker_init
from alexnet.data.stats import DatasetStats

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], torch.Tensor]


class ArrayDataset(KeyedItems, Dataset):
    """Images held in memory as one uint8 (N, H, W, 3) array (CIFAR, synthetic data)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def item(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


class FolderDataset(KeyedItems, Dataset):
    """Images decoded from disk on every read (ImageNet), after the paper's resize + centre crop
    to `size` x `size`; `size=None` keeps the original image (VGG's transforms rescale it).

    A file that cannot be used (`alexnet.data.images.SKIPPED`) is replaced by the next usable one
    in the index (its label with it), and `record` counts what was found, workers included.
    """

    # Consecutive unusable files after which the folder is taken to be broken, not just dirty.
    MAX_REPLACEMENTS = 100

    def __init__(
        self,
        index: FolderIndex,
        transform: Transform,
        size: int | None = 256,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.index, self.transform, self.size = index, transform, size
        self.max_pixels = max_pixels
        self.record = ImageRecord(index.paths)

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> np.ndarray:
        img, notes = open_rgb(self.index.paths[i], self.max_pixels)
        if notes:
            self.record.note(i, notes)
        if self.size is None:
            return np.array(img, dtype=np.uint8)  # a writable copy, as torch wants
        return resize_shorter_and_center_crop(img, self.size)

    def item(self, i: int) -> tuple[torch.Tensor, int]:
        for j in range(i, i + self.MAX_REPLACEMENTS):
            j %= len(self)
            if self.record.skipped(j):
                continue
            try:
                return self.transform(self.load(j)), self.index.labels[j]
            except BadImage as bad:
                self.record.note(j, [bad.kind], bad.detail)
        raise DataError(
            f"{self.MAX_REPLACEMENTS} consecutive unusable images from {self.index.paths[i]} on; "
            f"`python -m alexnet.check_data` lists what is wrong with {self.index.root}"
        )


def start_where(loader, order: TrainOrder | None):
    """A fast loader (`alexnet.data.device_loader.RankBatches`) set to start where the training
    `order` does: its epoch, and the batches of it a restored checkpoint has trained on."""
    if order is not None:
        loader.set_epoch(order.epoch)
        loader.resume_at = order.resume_at
    return loader


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
        aug: Augmentation | None = None,
        pin_memory: bool = True,
        eval_batch_size: int | None = None,
        gpu_resident: bool = False,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser().resolve()
        self.num_classes = num_classes
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        self.aug = aug if aug is not None else PlainAug()
        self.pin_memory = pin_memory
        # All uint8 images on the model's device, augmented there (alexnet.data.device_loader).
        self.gpu_resident = gpu_resident
        self.class_names: list[str] = []
        self._stats: DatasetStats | None = None
        # The training order follows the run's seed (seed_everything sets torch's initial seed);
        # a restored checkpoint brings back its own (alexnet.data.order).
        self.order_seed = int(torch.initial_seed())
        self._resume_order: dict[str, int] | None = None

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
        train, test = self.aug.presets(self.stats())
        val = test
        if self.aug.eval != "center":
            val = self.aug.centre_eval().presets(self.stats())[1]
        return train, val, test

    def check_classes(self, found: int) -> None:
        if found != self.num_classes:
            raise ValueError(
                f"data.num_classes={self.num_classes} but {self.root / self.name} holds {found} "
                f"classes; set data.num_classes={found}"
            )

    def bad_images(self) -> dict[str, dict[str, int]]:
        """{split: {kind: files}} of the problem images found so far (alexnet.data.images)."""
        found = {}
        for split in ("train", "val", "test"):
            record = getattr(getattr(self, f"{split}_set", None), "record", None)
            if record is not None and (counts := record.counts()):
                found[split] = counts
        return found

    # -- resuming: where in the training order a checkpoint stands ---------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"train_order": order_state(self.trainer, self.order_seed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_order" in state_dict:
            self._resume_order = dict(state_dict["train_order"])
            self.order_seed = self._resume_order["seed"]

    # -- loaders -----------------------------------------------------------------------------
    def model_device(self) -> torch.device:
        """Where the LightningModule being trained is (CPU when no trainer is attached)."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return module.device if module is not None else torch.device("cpu")

    def _device_loader(self, dataset: Dataset, batch_size: int, order: TrainOrder | None):
        """A loader that makes batches on the model's device, or None for a DataLoader.
        `order` is the training order (None for evaluation): where the fit starts or resumes."""
        if not self.gpu_resident:
            return None
        if not isinstance(dataset, ArrayDataset):
            raise ValueError(
                f"data.gpu_resident=true needs a dataset held in memory (CIFAR-10, synthetic), "
                f"not {self.name}; for ImageNet use data.store=true"
            )
        from alexnet.data.augment.batched import batch_transform_of
        from alexnet.data.device_loader import DeviceLoader

        loader = DeviceLoader(
            dataset.images,
            dataset.labels,
            batch_transform_of(dataset.transform),
            batch_size,
            shuffle=order is not None,
            drop_last=order is not None,
            device=self.model_device,
            **self._fast_loader_args(),
        )
        return start_where(loader, order)

    def _fast_loader_args(self) -> dict[str, int]:
        """The fast loaders' seed and rank: the training order's seed (the run's, or the
        checkpoint's), shared by every rank."""
        trainer = self.trainer
        return {
            "seed": self.order_seed,
            "rank": trainer.global_rank if trainer else 0,
            "world_size": trainer.world_size if trainer else 1,
        }

    def _loader(self, dataset: Dataset, batch_size: int, sampler=None) -> DataLoader:
        # Training passes its resumable order as the sampler; evaluation passes none.
        device_loader = self._device_loader(dataset, batch_size, sampler)
        if device_loader is not None:
            return device_loader
        # A transform whose outputs differ in size (VGG's dense evaluation) says how to batch them.
        collate_fn = getattr(getattr(dataset, "transform", None), "collate_fn", None)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            worker_init_fn=worker_init,
            # A generator of its own: creating an iterator then draws nothing from torch's global
            # RNG, whose state a checkpoint restores (dropout must replay exactly on resume).
            generator=torch.Generator().manual_seed(self.order_seed),
            collate_fn=collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        order = train_order(
            len(self.train_set), self.batch_size, self.order_seed, self.trainer, self._resume_order
        )
        return self._loader(self.train_set, self.batch_size, sampler=order)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)
