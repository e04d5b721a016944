"""CIFAR-10 from `<root>/cifar10/`, in either layout people already have:

- the official python batches as torchvision keeps them: `cifar10/cifar-10-batches-py/`
  (downloaded there by torchvision when `download=true` and the network is up), or
- an image-folder tree: `cifar10/train/<class>/*.jpg` and `cifar10/test/<class>/*.jpg`.

All 60,000 images are decoded once into uint8 arrays held in memory; a decoded copy is cached in
`cifar10/decoded.npz` so the next run (say, job 2 of an ablation grid) skips decoding.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np

from alexnet.data.base import ArrayDataset, ClassificationDataModule, split_train_val
from alexnet.data.folder import DataError, decode_all, index_folder
from alexnet.data.stats import DatasetStats, compute_stats

log = logging.getLogger(__name__)

HOW_TO_GET = (
    "run with data.download=true when online, or put the CIFAR-10 python batches "
    "(cifar-10-batches-py/) or a train/<class>/, test/<class>/ image tree in it, "
    "or point DATA_DIR / data.root at the folder that holds cifar10/"
)


def _fingerprint(paths: list[Path]) -> np.ndarray:
    """Cheap identity of a folder tree: file count and total bytes."""
    return np.array([len(paths), sum(p.stat().st_size for p in paths)], dtype=np.int64)


class CIFAR10DataModule(ClassificationDataModule):
    name = "cifar10"

    def __init__(
        self,
        root: str | Path = "data",
        num_classes: int = 10,
        batch_size: int = 128,
        num_workers: int = 2,
        val_size: int = 5000,
        split_seed: int = 0,
        download: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(root, num_classes, batch_size, num_workers, **kwargs)
        self.val_size, self.split_seed, self.download = val_size, split_seed, download
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def folder(self) -> Path:
        return self.root / self.name

    # -- reading -----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        batches = self.folder / "cifar-10-batches-py"
        if self.download and not batches.exists() and not (self.folder / "train").exists():
            from torchvision.datasets import CIFAR10

            # torchvision's urllib download has no timeout of its own; never hang offline.
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(30)
            try:
                CIFAR10(self.folder, train=True, download=True)
            except OSError as err:
                raise DataError(f"could not download CIFAR-10 into {self.folder} ({err}); "
                                f"{HOW_TO_GET}") from err
            finally:
                socket.setdefaulttimeout(previous)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 (N,32,32,3), labels int64 (N,)) of the official `train` or `test` split."""
        if split not in self._arrays:
            self._arrays[split] = self._read(split)
        return self._arrays[split]

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if (self.folder / "cifar-10-batches-py").is_dir():
            from torchvision.datasets import CIFAR10

            try:
                ds = CIFAR10(self.folder, train=split == "train", download=False)
            except RuntimeError as err:  # torchvision checks every file's md5
                raise DataError(
                    f"{self.folder / 'cifar-10-batches-py'} is incomplete or corrupted ({err}); "
                    "delete it and run with data.download=true"
                ) from err
            self.class_names = list(ds.classes)
            return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)
        if not self.folder.is_dir():
            raise DataError(f"CIFAR-10 not found: {self.folder} does not exist; {HOW_TO_GET}")
        index = index_folder(self.folder / split, HOW_TO_GET)
        self.class_names = index.classes
        # A folder tree lists the images class by class; put them in a fixed random order, as the
        # official batches are, so any prefix (limit_val_batches, a test subset) mixes classes.
        order = np.random.default_rng(0).permutation(len(index))
        paths = [index.paths[i] for i in order]
        labels = np.asarray(index.labels, dtype=np.int64)[order]
        return self._decode_cached(split, paths, labels)

    def _decode_cached(self, split: str, paths: list[Path], labels: np.ndarray):
        cache = self.folder / f"decoded-{split}.npz"
        fingerprint = _fingerprint(paths)
        if cache.exists():
            with np.load(cache, allow_pickle=False) as f:
                if np.array_equal(f["fingerprint"], fingerprint):
                    return f["images"], f["labels"]
        log.info("decoding %d CIFAR-10 %s images from %s", len(paths), split, self.folder)
        images = decode_all(paths, size=32)
        try:
            np.savez(cache, images=images, labels=labels, fingerprint=fingerprint)
        except OSError as err:  # read-only data folder: decode again next time
            log.warning("could not cache decoded images at %s (%s)", cache, err)
        return images, labels

    # -- splits ------------------------------------------------------------------------------
    def compute_stats(self) -> DatasetStats:
        # The whole official training set (the 5k validation images included): the mean image
        # moves by a fraction of a grey level, and one file serves every val_size.
        return compute_stats(self.arrays("train")[0])

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        images, labels = self.arrays("train")
        self.check_classes(int(labels.max()) + 1)
        train_tf, val_tf, test_tf = self.transforms()
        train_idx, val_idx = split_train_val(len(images), self.val_size, self.split_seed)
        self.train_set = ArrayDataset(images[train_idx], labels[train_idx], train_tf)
        self.val_set = ArrayDataset(images[val_idx], labels[val_idx], val_tf)
        test_images, test_labels = self.arrays("test")
        self.test_set = ArrayDataset(test_images, test_labels, test_tf)
