"""CIFAR-10 from `<root>/cifar10/`, in either layout people already have:

- the official python batches as torchvision keeps them: `cifar10/cifar-10-batches-py/`
  (downloaded there when `download=true` and the network is up, and checked against the
  official MD5s on every read: alexnet.data.download), or
- an image-folder tree: `cifar10/train/<class>/*.jpg` and `cifar10/test/<class>/*.jpg`.

All 60,000 images are decoded once into uint8 arrays held in memory; a decoded copy is cached in
`cifar10/decoded-<split>.npz` so the next run (say, job 2 of an ablation grid) skips decoding.
Files of a folder tree that cannot be decoded are left out and counted (alexnet.data.images).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from alexnet.data.base import ArrayDataset, ClassificationDataModule, split_train_val
from alexnet.data.download import DownloadFailed, download_cifar10, verify_batches
from alexnet.data.folder import DataError, index_folder
from alexnet.data.images import count_kinds, decode_all, flags_ok
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
    image_size = 32

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
        self._flags: dict[str, np.ndarray] = {}  # per file of a folder tree: alexnet.data.images

    @property
    def folder(self) -> Path:
        return self.root / self.name

    # -- reading -----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        batches = self.folder / "cifar-10-batches-py"
        if self.download and not batches.exists() and not (self.folder / "train").exists():
            try:
                download_cifar10(self.folder)
            except DownloadFailed as err:
                raise DownloadFailed(f"{err}; {HOW_TO_GET}") from err

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 (N,32,32,3), labels int64 (N,)) of the official `train` or `test` split."""
        if split not in self._arrays:
            self._arrays[split] = self._read(split)
        return self._arrays[split]

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if (self.folder / "cifar-10-batches-py").is_dir():
            from torchvision.datasets import CIFAR10

            # MD5s first: a clear error naming the bad file, and nothing unpickled unverified.
            verify_batches(self.folder / "cifar-10-batches-py")
            ds = CIFAR10(self.folder, train=split == "train", download=False)
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
                if np.array_equal(f["fingerprint"], fingerprint) and "flags" in f:
                    self._flags[split] = f["flags"]
                    return f["images"], f["labels"]
        log.info("decoding %d CIFAR-10 %s images from %s", len(paths), split, self.folder)
        # Files that cannot be decoded are left out (their labels with them) and counted.
        images, flags = decode_all(paths, size=32)
        labels = labels[flags_ok(flags)]
        self._flags[split] = flags
        if problems := count_kinds(flags):
            log.warning("CIFAR-10 %s: %s", split, problems)
        try:  # via a temporary file: another run reading the cache never sees half of it
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as f:
                np.savez(f, images=images, labels=labels, fingerprint=fingerprint, flags=flags)
            tmp.replace(cache)
        except OSError as err:  # read-only data folder: decode again next time
            log.warning("could not cache decoded images at %s (%s)", cache, err)
        return images, labels

    def bad_images(self) -> dict[str, dict[str, int]]:
        """{split: {kind: files}} found when decoding a folder tree (official `train`/`test`)."""
        return {split: c for split, flags in self._flags.items() if (c := count_kinds(flags))}

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
