"""Batches made on the training device from a uint8 dataset that lives there (GPU-resident data).

CIFAR-10 is 150 MB of uint8 pixels: all of it fits on any GPU. `DeviceLoader` moves the images
and labels to the device once, then every batch is an index into them plus the batched
augmentation of `alexnet.data.batch_transforms` -- no worker processes, no host-to-device copy
per step, nothing for the GPU to wait on. The same code runs on CPU (the device is wherever the
LightningModule is), which is how the tests exercise it.

Randomness: two `torch.Generator`s on the device carry on from epoch to epoch, so each epoch
gets a new order and new crops, flips and alphas. The order's is seeded by `seed`, which every
rank must share (by default the run's seed, see `shared_seed`): under DDP each rank takes every
`world_size`-th image of that one permutation. The augmentation's is seeded by (`seed`, rank),
so ranks draw different crops.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from alexnet.data.batch_transforms import BatchTransform

DeviceLike = torch.device | str | Callable[[], torch.device]


def shared_seed() -> int:
    """A seed all ranks agree on: the run's (`lightning.seed_everything` exports it as
    PL_GLOBAL_SEED), else torch's initial seed. Unlike a draw from the global RNG it does not
    depend on per-rank reseeding, nor shift the random stream the network's init uses."""
    return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))


def rank_seed(seed: int, rank: int) -> int:
    """A seed of its own for each rank, from the shared one."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def resolve_device(device: DeviceLike) -> torch.device:
    return torch.device(device() if callable(device) else device)



def images_per_rank(n: int, rank: int, world_size: int, drop_last: bool) -> int:
    """How many of `n` images rank `rank` sees (its stride-`world_size` share)."""
    return n // world_size if drop_last else -(-(n - rank) // world_size)


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


class RankBatches:
    """What `DeviceLoader` and `StoreLoader` share: the batch settings, the two seeds, and this
    rank's share of an epoch's order. Subclasses say how many images there are (`_num_images`)
    and how an epoch's order is drawn and turned into batches."""

    def __init__(
        self,
        transform: BatchTransform,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        device: DeviceLike,
        seed: int | None,
        rank: int,
        world_size: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.transform, self.batch_size = transform, batch_size
        self.shuffle, self.drop_last, self.device = shuffle, drop_last, device
        self.seed = shared_seed() if seed is None else seed
        self.rank, self.world_size = rank, world_size
        self.aug_seed = rank_seed(self.seed, rank)

    def _num_images(self) -> int:
        raise NotImplementedError

    def _per_rank(self) -> int:
        return images_per_rank(self._num_images(), self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        return batch_count(self._per_rank(), self.batch_size, self.drop_last)

    def _rank_share(self, order):
        """This rank's part of the epoch's `order` (a numpy array or a tensor): every
        `world_size`-th image from `rank` on, cut to `_per_rank()` images."""
        return order[self.rank :: self.world_size][: self._per_rank()]

    def _batch_starts(self) -> range:
        """Where each of this epoch's `len(self)` batches starts in the rank's share."""
        return range(0, len(self) * self.batch_size, self.batch_size)


class DeviceLoader(RankBatches):
    """Iterable of (images float32 (B, 3, crop, crop), labels int64 (B,)) on `device`.

    images: uint8 (N, H, W, 3) numpy array; labels (N,). `device` may be a callable, resolved
    when an epoch starts (the data module passes "wherever the model is"). `len()` is the
    number of batches per epoch on this rank.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: BatchTransform,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        device: DeviceLike = "cpu",
        seed: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(
            transform, batch_size, shuffle, drop_last, device, seed, rank, world_size
        )
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self._on_device: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None
        self._order_generator: torch.Generator | None = None
        self._generator: torch.Generator | None = None

    def _num_images(self) -> int:
        return len(self.images)

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The uint8 images and labels on `device`, copied there on first use."""
        if self._on_device is None or self._on_device[0] != device:
            self._on_device = (
                device,
                torch.from_numpy(np.ascontiguousarray(self.images)).to(device),
                torch.from_numpy(self.labels).to(device),
            )
            self._order_generator = torch.Generator(device=device).manual_seed(self.seed)
            self._generator = torch.Generator(device=device).manual_seed(self.aug_seed)
        return self._on_device[1], self._on_device[2]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = resolve_device(self.device)
        images, labels = self.tensors(device)
        n = len(images)
        if self.shuffle:
            order = torch.randperm(n, generator=self._order_generator, device=device)
        else:
            order = torch.arange(n, device=device)
        order = self._rank_share(order)
        for start in self._batch_starts():
            idx = order[start : start + self.batch_size]
            yield self.transform(images[idx], self._generator), labels[idx]
