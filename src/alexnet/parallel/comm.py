"""The towers' communication (paper section 3.2), as differentiable torch.distributed calls.

Two collectives carry all the traffic between the towers:

- :func:`gather_towers` concatenates every tower's maps along dim 1 (channels, or features)
  so a layer "connected to both towers" sees all of them. Its backward sums what every tower
  sends back for each slice and hands each tower the gradient of its own slice (a
  reduce-scatter): every tower's next layer read the whole gathered tensor, so each slice's
  true gradient is the sum of their contributions.
- :func:`sum_towers` adds the towers' partial outputs (the output layer, whose inputs are split
  across the towers). Its backward is the identity: after the sum every rank holds the same
  logits and computes the same loss, so the gradient each rank sees is already the whole
  gradient of the one loss; summing the copies would double it.

Both work on any backend with all-gather and reduce-scatter (NCCL, and gloo for CPU tests).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd import Function

# The single-tensor collectives were renamed in recent torch; the old names warn there.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class _GatherTowers(Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        world = dist.get_world_size(group)
        x = x.contiguous()
        stacked = x.new_empty((world * x.shape[0], *x.shape[1:]))
        _all_gather(stacked, x, group=group)
        # (world*N, C, ...) -> (N, world*C, ...): tower t's channels land in block t, the order
        # the grouped single-process net uses.
        return stacked.unflatten(0, (world, x.shape[0])).transpose(0, 1).flatten(1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        world = dist.get_world_size(ctx.group)
        n = grad.shape[0]
        # (N, world*C, ...) -> (world*N, C, ...): block t holds the gradient for tower t's slice.
        blocks = grad.unflatten(1, (world, -1)).transpose(0, 1).flatten(0, 1).contiguous()
        own = grad.new_empty((n, *blocks.shape[1:]))
        _reduce_scatter(own, blocks, group=ctx.group)
        return own, None


class _SumTowers(Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def gather_towers(x: torch.Tensor, group=None) -> torch.Tensor:
    """Per tower ``(N, C, ...)`` -> ``(N, towers*C, ...)``, tower t's at ``[t*C, (t+1)*C)``."""
    return _GatherTowers.apply(x, group)


def sum_towers(x: torch.Tensor, group=None) -> torch.Tensor:
    """The towers' partial results added up; every rank gets the sum (see module docstring)."""
    return _SumTowers.apply(x, group)


def broadcast_from_first_tower(tensors: list[torch.Tensor], group=None) -> None:
    """Overwrite ``tensors`` in place with the first tower's: model parallelism needs every tower
    to see the same batch, which independent data loaders (own augmentation seeds) do not give."""
    src = dist.get_global_rank(group, 0) if group is not None else 0
    for t in tensors:
        dist.broadcast(t, src=src, group=group)
