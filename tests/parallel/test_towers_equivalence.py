"""Two towers on two gloo processes compute what the grouped single-process net computes.

Same weights, same batch: the logits and every gradient of each tower equal the grouped
(``towers=2``) net's, sliced the same way, to float32 rounding. Both the CIFAR net and the
paper's 224px net (at batch 2), in one pair of processes to pay for the start-up once.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from alexnet.models import build_model
from alexnet.parallel.towers import TowerAlexNet, tower_state_dict
from dist_helpers import run_ranks

# An odd class count: fc8 is split by input, so any number of classes works.
NETS = [("alexnet_cifar", 4, 7), ("alexnet", 2, 7)]


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    # float32 sums in another order: differences of a few ulps of the tensor's scale.
    tol = 1e-5 * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=tol, msg=lambda m: f"{what}: {m}")


def check_net(rank: int, name: str, batch: int, classes: int) -> None:
    torch.manual_seed(0)
    # lrn_convention=torch: alpha/n makes LRN matter at these activation scales.
    grouped = build_model(name, num_classes=classes, init="kaiming", lrn_convention="torch")
    tower = TowerAlexNet(grouped, rank)
    x = torch.randn(batch, 3, grouped.input_size, grouped.input_size)
    y = torch.randint(0, classes, (batch,))

    # eval mode: dropout (p=0.5) is off, the towers equal the grouped net
    grouped.eval(), tower.eval()
    with torch.no_grad():
        assert_close(tower(x), grouped(x), f"{name} eval logits")

    # train mode without dropout: logits and every gradient
    grouped.train(), tower.train()
    for net in (grouped, tower):
        net.drop6.p = net.drop7.p = 0.0
    want = grouped(x)
    F.cross_entropy(want, y).backward()
    got = tower(x)
    F.cross_entropy(got, y).backward()
    assert_close(got, want.detach(), f"{name} logits")
    grads = tower_state_dict({k: p.grad for k, p in grouped.named_parameters()}, rank)
    for k, p in tower.named_parameters():
        assert_close(p.grad, grads[k], f"{name} rank {rank} grad {k}")

    # train mode with dropout: masks are drawn per rank, yet both ranks end with the same
    # logits, because each tower drops its own units before the others see them
    tower.drop6.p = tower.drop7.p = 0.5
    torch.manual_seed(100 + rank)
    logits = tower(x).detach()
    both = [torch.empty_like(logits) for _ in range(2)]
    torch.distributed.all_gather(both, logits)
    assert torch.equal(both[0], both[1]), "the ranks disagree on the logits under dropout"


def check_all(rank: int) -> None:
    for net in NETS:
        check_net(rank, *net)


@pytest.mark.slow
def test_towers_forward_and_gradients_equal_the_grouped_net():
    run_ranks(check_all)
