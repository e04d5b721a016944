"""Data modules, datasets and the paper's preprocessing/augmentation (section 4.1)."""

import os

# albumentations checks PyPI for updates at import time; never touch the network for that.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from alexnet.data.cifar10 import CIFAR10DataModule  # noqa: E402
from alexnet.data.folder import DataError  # noqa: E402
from alexnet.data.imagenet import ImageNetDataModule  # noqa: E402
from alexnet.data.synthetic import SyntheticDataModule  # noqa: E402

__all__ = ["CIFAR10DataModule", "DataError", "ImageNetDataModule", "SyntheticDataModule"]
