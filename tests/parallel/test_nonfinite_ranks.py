"""Under DDP a NaN loss on one rank reaches every rank's gradients through the all-reduce, while
the other ranks' losses stay finite: the NaN guard's flag must be agreed across ranks, so that
all of them skip (or stop) together."""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
from test_parallel_training import make_trainer, overrides

from alexnet.config.entry import build_data, build_module
from alexnet.parallel.launch import prepare_parallel
from alexnet.training.module import Classifier
from alexnet.training.nonfinite import NonFiniteGuard, any_rank
from dist_helpers import free_port, start_ranks

BAD_STEP = 2  # not the first: with a fused SGD the first step always takes the host path


def flags(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """any_rank of "rank 1's loss went non-finite" and of "no rank's did", on this rank."""
    return any_rank(torch.tensor(rank == 1)), any_rank(torch.tensor(False))


def check_flags(only_rank_1: torch.Tensor, none: torch.Tensor) -> None:
    assert only_rank_1.dtype == torch.float32 and only_rank_1.item() == 1.0
    assert none.item() == 0.0


def skipping_run(rank: int, fused: bool, tmp: str) -> dict:
    from conftest import compose_config

    cfg = compose_config(
        "train",
        [*overrides("ddp"), "model.conv_width=0.25", f"optim.fused={str(fused).lower()}"],
        Path(tmp) / f"run_fused_{fused}",
    )
    L.seed_everything(cfg.seed)
    datamodule, module = build_data(cfg), build_module(cfg)
    guard = NonFiniteGuard("skip")
    trainer = make_trainer(cfg, [guard])
    prepare_parallel(trainer, datamodule)
    trainer.fit(module, datamodule=datamodule)
    return {
        "skipped": guard.skipped,
        "weights": {k: v.detach().clone() for k, v in module.net.named_parameters()},
    }


def worker(rank: int, port: int, tmp: str) -> None:
    """Both skipping runs (host and device path) on the same two processes, then the flags
    through the process group Lightning set up: one spawn of two processes instead of three."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
        WORLD_SIZE="2",
        NO_ALBUMENTATIONS_UPDATE="1",
    )
    torch.set_num_threads(1)
    original = Classifier.training_step

    def training_step(self, batch, batch_idx):  # only rank 1's loss goes bad
        loss = original(self, batch, batch_idx)
        bad = rank == 1 and self.trainer.global_step == BAD_STEP
        return loss * math.nan if bad else loss

    Classifier.training_step = training_step
    runs = {fused: skipping_run(rank, fused, tmp) for fused in (False, True)}
    assert dist.is_initialized() and dist.get_world_size() == 2
    torch.save({"runs": runs, "flags": flags(rank)}, Path(tmp) / f"rank{rank}.pt")


# Two processes, two short DDP trainings each
@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp_nonfinite")
    start_ranks(worker, (free_port(), str(tmp)))
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_a_nonfinite_loss_on_one_rank_is_seen_by_every_rank(ranks):
    for r in ranks:
        check_flags(*r["flags"])


def test_one_process_keeps_its_own_flag():
    assert any_rank(torch.tensor(True)).item() == 1.0
    assert any_rank(torch.tensor(False)).item() == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True], ids=["host_path", "device_path"])
def test_ddp_ranks_skip_a_nan_of_one_rank_together(ranks, fused):
    runs = [r["runs"][fused] for r in ranks]
    assert runs[0]["skipped"] == runs[1]["skipped"] == [BAD_STEP]
    for name, w in runs[0]["weights"].items():
        assert torch.isfinite(w).all(), f"rank 0 applied the NaN gradient to {name}"
        assert torch.equal(w, runs[1]["weights"][name]), f"the replicas differ in {name}"
