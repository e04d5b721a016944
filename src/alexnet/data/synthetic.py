"""Random images for tests and benchmarks: any size, any number of classes, no disk.

Each class has its own mean colour, so a network can learn the labels (tests check that learning
happens) while the pixel noise keeps the task from being trivial at a glance.
"""

from __future__ import annotations

import numpy as np

from alexnet.data.base import ArrayDataset, ClassificationDataModule
from alexnet.data.stats import DatasetStats, compute_stats


def make_images(n: int, size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (n, size, size, 3), int64 labels (n,)) with a class-dependent mean colour."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(1234).uniform(40, 215, size=(num_classes, 3))
    labels = rng.integers(0, num_classes, size=n)
    noise = rng.normal(0, 30, size=(n, size, size, 3))
    images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


class SyntheticDataModule(ClassificationDataModule):
    name = "synthetic"

    def __init__(
        self,
        root: str = "data",
        num_classes: int = 10,
        batch_size: int = 32,
        num_workers: int = 0,
        image_size: int = 32,
        train_size: int = 256,
        val_size: int = 64,
        test_size: int = 64,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(root, num_classes, batch_size, num_workers, **kwargs)
        self.image_size = image_size
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed
        self.class_names = [f"class{i}" for i in range(num_classes)]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        offset = {"train": 0, "val": 1, "test": 2}[split]
        return make_images(self.sizes[split], self.image_size, self.num_classes, self.seed + offset)

    def stats(self) -> DatasetStats:
        # Nothing on disk to cache beside: compute every time (it is tiny).
        if self._stats is None:
            self._stats = compute_stats(self.arrays("train")[0])
        return self._stats

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        train_tf, val_tf, test_tf = self.transforms()
        self.train_set = ArrayDataset(*self.arrays("train"), train_tf)
        self.val_set = ArrayDataset(*self.arrays("val"), val_tf)
        self.test_set = ArrayDataset(*self.arrays("test"), test_tf)
