"""ImageNet (ILSVRC-2012) from `<root>/imagenet/{train,val}/<wnid>/*.JPEG`.

Every image is decoded on read, its shorter side resized to 256 (small images are upscaled) and
the central 256x256 patch kept — the paper's preprocessing — before the augmentation in `aug`.
`image_size=None` (`data.image_size=null`) keeps the original image instead, for VGG's scale
jitter and dense evaluation (`aug=vgg`), which rescale every image themselves; decoding then costs
more (full-size JPEGs decode ~10x slower than 256x256 ones), so give the loader more workers.
The labels of ILSVRC's test set are not public, so the official validation set serves as both
validation and test set, as for the paper's ILSVRC-2012 figures (40.7 / 18.2 top-1/top-5).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Subset

from alexnet.data.base import ClassificationDataModule, FolderDataset, start_where
from alexnet.data.folder import DataError, index_folder
from alexnet.data.images import MAX_PIXELS
from alexnet.data.stats import DatasetStats, compute_stats, imagenet_default_stats
from alexnet.data.store import JpegStore, StoreDataset, StoreLoader, store_folder

log = logging.getLogger(__name__)
STATS_SIZE = 256  # image side for the statistics when data.image_size=null

HOW_TO_GET = (
    "download ILSVRC-2012 from image-net.org (it cannot be fetched automatically) and arrange it "
    "as imagenet/train/<wnid>/*.JPEG and imagenet/val/<wnid>/*.JPEG under DATA_DIR or data.root"
)


class ImageNetDataModule(ClassificationDataModule):
    name = "imagenet"

    def __init__(
        self,
        root: str | Path = "data",
        num_classes: int = 1000,
        batch_size: int = 128,
        num_workers: int = 8,
        image_size: int | None = 256,
        stats_images: int = 0,
        store: bool = False,
        store_quality: int = 90,
        store_decode: str = "device",
        max_pixels: int = MAX_PIXELS,
        **kwargs,
    ) -> None:
        super().__init__(root, num_classes, batch_size, num_workers, **kwargs)
        self.image_size = image_size
        self.stats_images = stats_images
        # Read the prepared JPEG store (alexnet.data.store), decode and augment on the device.
        self.store, self.store_quality, self.store_decode = store, store_quality, store_decode
        self.max_pixels = max_pixels  # larger files are skipped unread (decompression bombs)

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def stats(self) -> DatasetStats:
        """Computed statistics when `make data-stats` has cached them, else ImageNet's published
        per-channel mean (as a flat mean image) and published RGB eigens."""
        if self._stats is None and not self.stats_path.exists():
            log.warning(
                "no %s: using ImageNet's published mean colour and eigens; "
                "`make data-stats DATA=imagenet` computes the paper's mean image",
                self.stats_path,
            )
            self._stats = imagenet_default_stats(self.stats_size)
        return super().stats()

    @property
    def stats_size(self) -> int:
        """Side of the images the statistics are computed on. With the originals kept (VGG, which
        only needs the mean colour), the paper's 256x256 centre crops serve: the mean image of
        images of many sizes is not defined, and their mean colour barely differs."""
        return self.image_size or STATS_SIZE

    def compute_stats(self) -> DatasetStats:
        """One pass over the training images (or a random `stats_images` of them), batched
        through worker processes."""
        index = index_folder(self.folder / "train", HOW_TO_GET)
        dataset = FolderDataset(index, np.asarray, self.stats_size, self.max_pixels)
        if self.stats_images:
            rng = np.random.default_rng(0)
            keep = rng.choice(len(index), min(self.stats_images, len(index)), replace=False)
            dataset = Subset(dataset, np.sort(keep).tolist())
        loader = DataLoader(
            dataset, batch_size=256, num_workers=self.num_workers, collate_fn=_stack_images
        )
        return compute_stats(iter(loader))

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        if self.store:
            self._setup_store()
            return
        train = index_folder(self.folder / "train", HOW_TO_GET)
        val = index_folder(self.folder / "val", HOW_TO_GET)
        if val.classes != train.classes:
            raise ValueError(
                f"{self.folder / 'val'} has {len(val.classes)} class folders that differ from "
                f"train's {len(train.classes)}; both need the same <wnid>/ sub-folders"
            )
        self.check_classes(len(train.classes))
        self.class_names = train.classes
        self._check_image_size()
        train_tf, val_tf, test_tf = self.transforms()
        self.train_set = FolderDataset(train, train_tf, self.image_size, self.max_pixels)
        self.val_set = FolderDataset(val, val_tf, self.image_size, self.max_pixels)
        self.test_set = FolderDataset(val, test_tf, self.image_size, self.max_pixels)

    def _setup_store(self) -> None:
        train = JpegStore(store_folder(self.folder), "train")
        val = JpegStore(store_folder(self.folder), "val")
        if train.size != self.image_size:
            raise DataError(
                f"the store in {store_folder(self.folder)} holds {train.size}px images but "
                f"data.image_size={self.image_size}; set it to {train.size} or remake the store"
            )
        if val.classes != train.classes:
            raise DataError(
                f"the train and val stores in {store_folder(self.folder)} have "
                f"different classes; remake them with `make imagenet-store`"
            )
        self.check_classes(len(train.classes))
        self.class_names = train.classes
        train_tf, val_tf, test_tf = self.transforms()
        self.train_set = StoreDataset(train, train_tf)
        self.val_set = StoreDataset(val, val_tf)
        self.test_set = StoreDataset(val, test_tf)

    def _device_loader(self, dataset, batch_size: int, order):
        if not self.store:
            return super()._device_loader(dataset, batch_size, order)
        from alexnet.data.augment.batched import batch_transform_of

        loader = StoreLoader(
            dataset.store,
            batch_transform_of(dataset.transform),
            batch_size,
            shuffle=order is not None,
            drop_last=order is not None,
            device=self.model_device,
            threads=max(1, self.num_workers),
            decode=self.store_decode,
            **self._fast_loader_args(),
        )
        return start_where(loader, order)

    def _check_image_size(self) -> None:
        vgg = self.aug.name == "vgg"
        if self.image_size is None and not vgg:
            raise ValueError(
                f"data.image_size=null keeps the original image sizes, which only aug=vgg "
                f"rescales itself; use data.image_size=256 with aug={self.aug.name}"
            )
        if self.image_size is not None and vgg:
            log.warning(
                "aug=vgg with data.image_size=%s: images are first cut to %sx%s centre squares "
                "(AlexNet's preprocessing); data.image_size=null gives VGG the original images",
                self.image_size,
                self.image_size,
                self.image_size,
            )


def _stack_images(batch: list[tuple[np.ndarray, int]]) -> np.ndarray:
    return np.stack([img for img, _ in batch])
