"""Under DDP a NaN loss on one rank reaches every rank's gradients through the all-reduce, while
the other ranks' losses stay finite: the NaN guard's flag must be agreed across ranks, so that
all of them skip (or stop) together."""

import torch
from dist_helpers import run_ranks

from alexnet.nonfinite import any_rank


def check_flags(rank: int) -> None:
    only_rank_1 = any_rank(torch.tensor(rank == 1))  # rank 1's loss went non-finite
    assert only_rank_1.dtype == torch.float32 and only_rank_1.item() == 1.0
    assert any_rank(torch.tensor(False)).item() == 0.0


def test_a_nonfinite_loss_on_one_rank_is_seen_by_every_rank():
    run_ranks(check_flags)


def test_one_process_keeps_its_own_flag():
    assert any_rank(torch.tensor(True)).item() == 1.0
    assert any_rank(torch.tensor(False)).item() == 0.0
