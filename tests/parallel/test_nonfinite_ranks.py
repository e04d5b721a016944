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
import torch.multiprocessing as mp
from dist_helpers import free_port, run_ranks
from test_parallel_training import make_trainer, overrides

from alexnet.entry import build_data, build_module
from alexnet.module import Classifier
from alexnet.parallel.launch import prepare_parallel
from alexnet.training.nonfinite import NonFiniteGuard, any_rank

BAD_STEP = 2  # not the first: with a fused SGD the first step always takes the host path


def check_flags(rank: int) -> None:
    only_rank_1 = any_rank(torch.tensor(rank == 1))  # rank 1's loss went non-finite
    assert only_rank_1.dtype == torch.float32 and only_rank_1.item() == 1.0
    assert any_rank(torch.tensor(False)).item() == 0.0


def test_a_nonfinite_loss_on_one_rank_is_seen_by_every_rank():
    run_ranks(check_flags)


def test_one_process_keeps_its_own_flag():
    assert any_rank(torch.tensor(True)).item() == 1.0
    assert any_rank(torch.tensor(False)).item() == 0.0


def skipping_worker(rank: int, port: int, fused: bool, tmp: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
        WORLD_SIZE="2",
        NO_ALBUMENTATIONS_UPDATE="1",
    )
    torch.set_num_threads(1)
    from conftest import compose_config

    original = Classifier.training_step

    def training_step(self, batch, batch_idx):  # only rank 1's loss goes bad
        loss = original(self, batch, batch_idx)
        bad = rank == 1 and self.trainer.global_step == BAD_STEP
        return loss * math.nan if bad else loss

    Classifier.training_step = training_step
    cfg = compose_config(
        "train",
        [*overrides("ddp"), "model.conv_width=0.25", f"optim.fused={str(fused).lower()}"],
        Path(tmp) / "run",
    )
    L.seed_everything(cfg.seed)
    datamodule, module = build_data(cfg), build_module(cfg)
    guard = NonFiniteGuard("skip")
    trainer = make_trainer(cfg, [guard])
    prepare_parallel(trainer, datamodule)
    trainer.fit(module, datamodule=datamodule)
    torch.save(
        {
            "skipped": guard.skipped,
            "weights": {k: v.detach().clone() for k, v in module.net.named_parameters()},
        },
        Path(tmp) / f"rank{rank}.pt",
    )


@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True], ids=["host_path", "device_path"])
def test_ddp_ranks_skip_a_nan_of_one_rank_together(tmp_path, fused):
    mp.spawn(skipping_worker, args=(free_port(), fused, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["skipped"] == ranks[1]["skipped"] == [BAD_STEP]
    for name, w in ranks[0]["weights"].items():
        assert torch.isfinite(w).all(), f"rank 0 applied the NaN gradient to {name}"
        assert torch.equal(w, ranks[1]["weights"][name]), f"the replicas differ in {name}"
