"""The training order: reproducible per (seed, epoch), resumable mid-epoch, seeds per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from alexnet.data.augment.presets import CifarTrain
from alexnet.data.base import ArrayDataset
from alexnet.data.order import KeyedItems, TrainOrder, order_state, train_order
from alexnet.data.stats import compute_stats


def test_permutation_depends_on_seed_and_epoch_only():
    a = list(TrainOrder(50, batch_size=5, seed=3))
    assert sorted(i for i, _ in a) == list(range(50))
    assert a == list(TrainOrder(50, batch_size=5, seed=3))
    assert a != list(TrainOrder(50, batch_size=5, seed=4))
    order = TrainOrder(50, batch_size=5, seed=3)
    order.set_epoch(1)
    assert [i for i, _ in order] != [i for i, _ in a]


def test_every_image_of_a_batch_carries_the_batch_seed():
    keys = list(TrainOrder(20, batch_size=4, seed=0))
    seeds = [s for _, s in keys]
    batches = [seeds[b : b + 4] for b in range(0, 20, 4)]
    assert all(len(set(batch)) == 1 for batch in batches)
    assert len({batch[0] for batch in batches}) == 5


def test_resume_skips_the_batches_already_trained_on():
    full = list(TrainOrder(40, batch_size=4, seed=1, epoch=2))
    order = TrainOrder(40, batch_size=4, seed=1, epoch=2)
    order.resume_at = (2, 3)
    assert list(order) == full[12:]
    assert list(order) == full[12:]  # iterating the resumed epoch again starts at the same place
    assert len(order) == 40  # Lightning counts the whole epoch
    order.set_epoch(3)
    assert len(list(order)) == 40  # later epochs are whole


def test_ranks_split_the_epoch():
    shares = [list(TrainOrder(10, batch_size=2, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == 4 for s in shares)
    seen = [i for share in shares for i, _ in share]
    assert set(seen) == set(range(10))  # padded by wrapping, like DistributedSampler


class FakeLoop:
    """The parts of Lightning's fit loop that order_state reads."""

    def __init__(self, epoch_started, epoch_processed, batches_processed):
        from types import SimpleNamespace as NS

        self.epoch_progress = NS(current=NS(started=epoch_started, processed=epoch_processed))
        self.epoch_loop = NS(batch_progress=NS(current=NS(processed=batches_processed)))


@pytest.mark.parametrize(
    ("started", "processed", "batches", "expected"),
    [
        (3, 2, 7, (2, 7)),  # mid-epoch 2, 7 batches in the weights
        (3, 3, 12, (3, 0)),  # epoch 2 ended: epoch 3 starts from its first batch
    ],
)
def test_order_state_reads_where_training_stands(started, processed, batches, expected):
    from types import SimpleNamespace as NS

    state = order_state(NS(fit_loop=FakeLoop(started, processed, batches)), seed=5)
    assert (state["epoch"], state["batches_done"]) == expected
    assert state["seed"] == 5
    order = train_order(
        40,
        4,
        5,
        NS(fit_loop=FakeLoop(started, processed, batches), world_size=1, global_rank=0),
        state,
    )
    assert order.epoch == expected[0]
    assert len(list(order)) == 40 - 4 * expected[1]


def make_dataset(n=24):
    images = np.random.default_rng(0).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    transform = CifarTrain(compute_stats(images), lighting=0.1)
    return ArrayDataset(images, np.arange(n), transform)


def batches(dataset, order, num_workers):
    loader = DataLoader(dataset, batch_size=4, sampler=order, num_workers=num_workers)
    return [x for x, _ in loader]


def test_augmentation_follows_the_batch_seed_not_the_worker():
    dataset = make_dataset()
    one = batches(dataset, TrainOrder(24, 4, seed=9), num_workers=0)
    two = batches(dataset, TrainOrder(24, 4, seed=9), num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    # and differs from another epoch's batches of the same images
    assert not torch.equal(one[0], batches(dataset, TrainOrder(24, 4, seed=10), 0)[0])


def test_resumed_epoch_sees_the_same_augmented_batches():
    dataset = make_dataset()
    full = batches(dataset, TrainOrder(24, 4, seed=2), 0)
    order = TrainOrder(24, 4, seed=2)
    order.resume_at = (0, 2)
    tail = batches(dataset, order, 0)
    assert all(torch.equal(a, b) for a, b in zip(full[2:], tail, strict=True))


def test_plain_indices_still_work():
    dataset = make_dataset(4)
    x, y = dataset[1]
    assert x.shape == (3, 32, 32) and y == 1
    assert isinstance(dataset, KeyedItems)
