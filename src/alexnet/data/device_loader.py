"""Batches made on the training device from a uint8 dataset that lives there (GPU-resident data).

CIFAR-10 is 150 MB of uint8 pixels: all of it fits on any GPU. `DeviceLoader` moves the images
and labels to the device once, then every batch is an index into them plus the batched
augmentation of `alexnet.data.augment.batched` -- no worker processes, no host-to-device copy
per step, nothing for the GPU to wait on. The same code runs on CPU (the device is wherever the
LightningModule is), which is how the tests exercise it.

Randomness, exactly resumable as the DataLoader path's (`alexnet.data.order`): epoch `e`'s
order is the permutation `epoch_permutation(seed, e)` -- one numpy draw and one upload per epoch
-- and batch `b`'s crops, flips and alphas come from a `torch.Generator` on the device reseeded
from `batch_seed(seed, e, rank, b)` (host-side state only: no synchronisation per step). Nothing
carries over from one epoch or batch to the next, so an epoch's batches do not depend on which
epochs were iterated before, and a loader told to resume `b` batches into epoch `e` (the data
module passes the checkpoint's position) makes exactly the batches a run that never stopped would
have made from there on. `seed` must be shared by all ranks (the data module passes the run's;
by default `shared_seed`): under DDP each rank takes every `world_size`-th image of the one
permutation, and its augmentation seeds differ by rank.

Lightning sets each training epoch through `loader.sampler.set_epoch(e)`, as it does for a
DataLoader's sampler; here `sampler` is the loader itself. A loader iterated without it (tests,
benchmarks) goes on to the next epoch after each complete pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from alexnet.data.augment.batched import BatchTransform
from alexnet.data.order import batch_seed, epoch_permutation, rank_positions

DeviceLike = torch.device | str | Callable[[], torch.device]


def shared_seed() -> int:
    """A seed all ranks agree on: the run's (`lightning.seed_everything` exports it as
    PL_GLOBAL_SEED), else torch's initial seed. Unlike a draw from the global RNG it does not
    depend on per-rank reseeding, nor shift the random stream the network's init uses."""
    return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))


def resolve_device(device: DeviceLike) -> torch.device:
    return torch.device(device() if callable(device) else device)


def images_per_rank(n: int, rank: int, world_size: int, drop_last: bool) -> int:
    """How many of `n` images rank `rank` sees: training (`drop_last`) by the epoch plan
    (`alexnet.data.order.rank_positions`, the same count on every rank); evaluation each image
    once (its stride-`world_size` share)."""
    return -(-n // world_size) if drop_last else -(-(n - rank) // world_size)


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


class RankBatches:
    """What `DeviceLoader` and `StoreLoader` share: the batch settings, the seed, this rank's
    share of an epoch's order, each batch's augmentation seed, and where in the training the
    loader stands (`epoch`, `resume_at`). Subclasses say how many images there are
    (`_num_images`) and how a batch is made."""

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
        epoch: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.transform, self.batch_size = transform, batch_size
        self.shuffle, self.drop_last, self.device = shuffle, drop_last, device
        self.seed = shared_seed() if seed is None else int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch = epoch
        # (epoch, batches of it already trained on), as `TrainOrder.resume_at`: kept, not
        # consumed, so that iterating the resumed epoch twice starts at the same place.
        self.resume_at: tuple[int, int] | None = None

    # -- where the training stands -------------------------------------------------------------
    # Lightning calls `set_epoch` on a loader's `sampler` before every epoch, and reads
    # `batch_sampler` when it looks at `sampler` (as a DataLoader has both).
    batch_sampler = None

    @property
    def sampler(self) -> RankBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _plan(self) -> tuple[int, range]:
        """(epoch, its batch numbers still to make): read when an epoch's iteration starts."""
        epoch, first = self.epoch, 0
        if self.resume_at is not None and self.resume_at[0] == epoch:
            first = min(self.resume_at[1], len(self))
        return epoch, range(first, len(self))

    def _finished(self, epoch: int) -> None:
        """A complete pass: the next one is the next epoch (unless Lightning says otherwise)."""
        self.epoch = epoch + 1

    # -- the draws -----------------------------------------------------------------------------
    def _num_images(self) -> int:
        raise NotImplementedError

    def _per_rank(self) -> int:
        return images_per_rank(self._num_images(), self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        return batch_count(self._per_rank(), self.batch_size, self.drop_last)

    def _rank_share(self, order: np.ndarray) -> np.ndarray:
        """This rank's part of the epoch's `order`: in training the sampler's
        (`rank_positions`: every `world_size`-th image from `rank` on, the tail padded by
        wrapping); in evaluation every `world_size`-th image, each image once."""
        if self.drop_last:
            return order[rank_positions(len(order), self.rank, self.world_size)]
        return order[self.rank :: self.world_size]

    def order(self, epoch: int) -> np.ndarray:
        """This rank's images of `epoch`, in order: from `(seed, epoch)` alone when shuffling."""
        n = self._num_images()
        return self._rank_share(
            epoch_permutation(self.seed, epoch, n) if self.shuffle else np.arange(n)
        )

    def batch_seed(self, epoch: int, batch: int) -> int:
        """The augmentation seed of batch `batch` of `epoch` on this rank."""
        return batch_seed(self.seed, epoch, self.rank, batch)

    def _batch_slice(self, batch: int) -> slice:
        return slice(batch * self.batch_size, (batch + 1) * self.batch_size)


class DeviceLoader(RankBatches):
    """Iterable of (images float32 (B, 3, crop, crop), labels int64 (B,)) on `device`.

    images: uint8 (N, H, W, 3) numpy array; labels (N,). `device` may be a callable, resolved
    when an epoch starts (the data module passes "wherever the model is"). `len()` is the
    number of batches per epoch on this rank (the whole epoch's, also when it resumes part way;
    the iterator then ends sooner).
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
        epoch: int = 0,
    ) -> None:
        super().__init__(
            transform, batch_size, shuffle, drop_last, device, seed, rank, world_size, epoch
        )
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self._on_device: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None

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
        return self._on_device[1], self._on_device[2]

    def _device_order(self, epoch: int, device: torch.device) -> torch.Tensor:
        """`order(epoch)` on `device`: one upload per epoch, asynchronous from pinned memory."""
        order = torch.from_numpy(self.order(epoch))
        if device.type == "cuda":
            return order.pin_memory().to(device, non_blocking=True)
        return order.to(device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: nothing is read before the first batch is asked for, by which time
        # Lightning has set the epoch.
        epoch, batches = self._plan()
        device = resolve_device(self.device)
        images, labels = self.tensors(device)
        order = self._device_order(epoch, device)
        generator = torch.Generator(device=device)
        for b in batches:
            idx = order[self._batch_slice(b)]
            generator.manual_seed(self.batch_seed(epoch, b))
            yield self.transform(images[idx], generator), labels[idx]
        self._finished(epoch)
