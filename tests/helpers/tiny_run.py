"""A training run small enough to repeat many times in tests (shared by the robustness tests).

VGG-A with LRN and dropout at 1/8 width (~60k parameters) on 80 synthetic 32x32 images, batch 8:
10 steps per epoch, validation on 32 images every epoch, random crops, flips and PCA lighting,
SGD with momentum and a plateau schedule with patience 0, deterministic, on the CPU. Run it with
one intra-op thread (`one_thread`): results then match across processes bit for bit, and on a
busy machine it is much faster than with two.
"""

from __future__ import annotations

import pytest
import torch

PER_EPOCH, EPOCHS = 10, 3
TINY = [
    "data=synthetic",
    "data.train_size=80",
    "data.val_size=32",
    "data.test_size=16",
    "data.batch_size=8",
    "data.num_workers=0",
    "model=vgg_cifar",
    "model.width=0.125",
    "model.init=paper",
    "model.lrn=true",
    "aug=cifar",
    "aug.lighting=0.1",
    "sched=plateau_paper",
    "sched.patience=0",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    f"trainer.max_epochs={EPOCHS}",
    "logger=none",
    "callbacks.progress_bar=false",
    "test=false",
    "seed=7",
    # No figure pass at the end: two thirds of such a run's time, and nothing here looks at it
    # (tests/training/test_dashboard.py tests the figures a run draws)
    "figures.enabled=false",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Import into a test module (`from tiny_run import one_thread`) to run it single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
