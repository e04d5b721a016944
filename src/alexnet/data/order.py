"""The order of the training images and the seeds of their augmentation, exactly resumable.

A 90-epoch run stopped mid-epoch must continue with the very batches it would have seen. Lightning
2.x restores the fit loop's counters from a checkpoint (how many batches of the current epoch were
trained on), but a shuffled DataLoader draws a new permutation from the global RNG, and
albumentations draws crops and flips from generators of its own that no checkpoint holds. Here:

- `TrainOrder` is the training sampler. Epoch `e`'s permutation depends on `(seed, e)` only, and
  the sampler can start `b` batches into an epoch, which is how a resumed run skips what it has
  trained on. It yields keys `(index, batch_seed)`: every image of a batch carries the batch's
  augmentation seed, drawn from `(seed, epoch, rank, batch)`.
- `KeyedItems` (mixed into the datasets) reseeds the transform from that seed at the start of
  each batch, so augmentation does not depend on the number of workers, on which worker got the
  batch, or on where a run was resumed. Reseeding costs ~35 us per batch, not per image.
- `order_state` / `train_order` carry the position through the data module's `state_dict`
  (which Lightning saves in every checkpoint and restores before it asks for the loaders).
- `epoch_permutation`, `rank_positions` and `batch_seed` are the epoch plan, as functions: the
  order, each rank's share of it (the tail padded by wrapping) and the augmentation seeds. The
  fast loaders (`alexnet.data.device_loader`, `alexnet.data.store`) train by the same plan, so a
  run sees the same images in the same batches whichever loader it uses.

`TrainOrder` subclasses `DistributedSampler` only so that Lightning, under DDP, keeps it instead
of wrapping it in a sampler of its own; it shards the permutation across ranks itself.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DistributedSampler

Key = tuple[int, int]


def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
    """Epoch `epoch`'s shuffled order of `size` images: a function of `(seed, epoch)` alone."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def rank_positions(size: int, rank: int, world: int) -> np.ndarray:
    """The positions in an epoch's order of `size` images that `rank` of `world` trains on.

    Every `world`-th position from `rank` on, the order first wrapped round (as PyTorch's
    DistributedSampler pads) to a multiple of `world`: every rank gets ceil(size / world) images,
    hence as many batches as every other, and no rank waits in a collective for a batch another
    rank does not have. The few images at the head of the order that pad the tail are seen twice
    in that epoch. The DataLoader sampler and the fast loaders both use this rule.
    """
    per_rank = -(-size // world)
    return (np.arange(per_rank) * world + rank) % size


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """The augmentation seed of batch `batch` of `epoch` on `rank` (a 32-bit integer)."""
    return int(np.random.SeedSequence([seed, epoch, rank, batch]).generate_state(1)[0])


class TrainOrder(DistributedSampler):
    """Shuffled (or sequential) indices, one epoch's permutation from `(seed, epoch)`, this rank's
    share of it, optionally starting some batches into the epoch. Yields `(index, batch_seed)`.

    `len()` is the full epoch's share (as the DataLoader and Lightning count batches) even when
    the epoch resumes part way; the iterator then simply ends sooner.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        epoch: int = 0,
    ) -> None:
        super().__init__(
            range(size),
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        self.size, self.batch_size = size, batch_size
        self.epoch = epoch
        # (epoch, batches of it already trained on); kept, not consumed, so that iterating the
        # resumed epoch twice (Lightning may) starts at the same place both times.
        self.resume_at: tuple[int, int] | None = None

    def __len__(self) -> int:
        return -(-self.size // self.num_replicas)

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's indices of `epoch`, in order (`rank_positions`: the tail padded)."""
        if self.shuffle:
            order = epoch_permutation(self.seed, epoch, self.size)
        else:
            order = np.arange(self.size)
        return order[rank_positions(self.size, self.rank, self.num_replicas)]

    def batch_seed(self, epoch: int, batch: int) -> int:
        return batch_seed(self.seed, epoch, self.rank, batch)

    def __iter__(self) -> Iterator[Key]:
        epoch = self.epoch  # read now: worker prefetching starts before the first next()
        start = 0
        if self.resume_at is not None and self.resume_at[0] == epoch:
            start = min(self.resume_at[1] * self.batch_size, len(self))
        return self._keys(self.indices(epoch), epoch, start)

    def _keys(self, indices: np.ndarray, epoch: int, start: int) -> Iterator[Key]:
        seed = 0
        for pos in range(start, len(indices)):
            if pos == start or pos % self.batch_size == 0:
                seed = self.batch_seed(epoch, pos // self.batch_size)
            yield int(indices[pos]), seed


# --------------------------------------------------------------------------------------------
# Datasets addressed by keys
# --------------------------------------------------------------------------------------------


def reseed(transform: Any, seed: int) -> None:
    """Restart `transform`'s random draws from `seed`, if it has any (presets do)."""
    fn = getattr(transform, "reseed", None)
    if fn is not None:
        fn(seed)


class KeyedItems:
    """Dataset mixin: `dataset[i]` as usual, and `TrainOrder`'s `(index, batch_seed)` keys.

    Subclasses implement `item(i)` and hold `transform`. A batch of keys (torch hands the whole
    batch to `__getitems__`) reseeds the transform once, from the batch's seed; a single key
    reseeds before its one item.
    """

    transform: Any

    def item(self, i: int) -> Any:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    def __getitem__(self, key: int | Key) -> Any:
        if isinstance(key, tuple):
            reseed(self.transform, key[1])
            return self.item(key[0])
        return self.item(key)

    def __getitems__(self, keys: Sequence[int | Key]) -> list[Any]:
        out, seed = [], None
        for key in keys:
            if isinstance(key, tuple):
                if key[1] != seed:
                    seed = key[1]
                    reseed(self.transform, seed)
                key = key[0]
            out.append(self.item(key))
        return out


# --------------------------------------------------------------------------------------------
# Where training stands, for checkpoints
# --------------------------------------------------------------------------------------------


def order_state(trainer: Any, seed: int) -> dict[str, int]:
    """`{"seed", "epoch", "batches_done"}`: the epoch a restored run will train and how many of
    its batches are already in the weights.

    Mid-epoch (the epoch started but is not processed yet) that is the batches Lightning counts
    as processed; at an epoch boundary it is 0 batches of the next epoch. These match what
    Lightning 2.6's loops do on restore, whether the checkpoint was written at a batch start,
    after a batch (SIGTERM), inside one (a non-finite loss) or at an epoch end.
    """
    epoch = batches = 0
    loop = getattr(trainer, "fit_loop", None)
    if loop is not None:
        progress = loop.epoch_progress.current
        epoch = progress.processed
        if progress.started > progress.processed:
            batches = loop.epoch_loop.batch_progress.current.processed
    return {"seed": int(seed), "epoch": int(epoch), "batches_done": int(batches)}


def train_order(
    size: int, batch_size: int, seed: int, trainer: Any, resume: dict[str, int] | None
) -> TrainOrder:
    """The sampler for a fit that starts (or resumes) where `trainer`'s restored loops stand."""
    world = getattr(trainer, "world_size", 1) if trainer is not None else 1
    rank = getattr(trainer, "global_rank", 0) if trainer is not None else 0
    loop = getattr(trainer, "fit_loop", None)
    # Lightning sets the sampler's epoch only after it has started iterating (and workers have
    # started prefetching), so a resumed run must start at the right epoch from the outset.
    epoch = loop.epoch_progress.current.processed if loop is not None else 0
    order = TrainOrder(size, batch_size, seed, num_replicas=world, rank=rank, epoch=epoch)
    if resume and resume.get("batches_done"):
        order.resume_at = (int(resume["epoch"]), int(resume["batches_done"]))
    return order


def worker_init(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM and seed as Lightning's `seed_everything(workers=True)`.

    A scheduler's SIGTERM (SLURM, Kubernetes) reaches every process of the job; a worker dying of
    it would make torch raise in the main process at an arbitrary point, possibly inside an
    optimizer step. Ignoring it lets the main process finish its batch, checkpoint and shut the
    workers down itself.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Lightning adds its worker seeding only to loaders without a worker_init_fn of their own.
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
