"""The paper's two-GPU model parallelism (section 3.2, Figure 2): one tower per process.

"We spread the net across two GPUs ... [we] put half of the kernels (or neurons) on each GPU,
with one additional trick: the GPUs communicate only in certain layers." :class:`TowerAlexNet`
is one of those halves. Rank ``t`` holds tower ``t``, i.e. exactly the slices of the grouped
single-process net (``AlexNet(towers=2)``) that the grouped net assigns to tower ``t``:

============  ==========================================  =============================
layer         tower t holds                               its input
============  ==========================================  =============================
conv1         kernels [t*C1/2, (t+1)*C1/2) (all of RGB)    the image (both towers)
conv2         its half of the kernels (groups=2 slice)     own conv1 maps
conv3         half of the kernels, each over *all* maps    **gathered** pool2 maps
conv4, conv5  half of the kernels (groups=2 slices)        own maps
fc6           neurons [t*2048, (t+1)*2048)                 **gathered** pool5 maps
fc7           neurons [t*2048, (t+1)*2048)                 **gathered** fc6 outputs
fc8           the weight columns reading its own fc7       own fc7 neurons; the partial
              neurons; the bias is replicated              logits are **summed**
============  ==========================================  =============================

So the towers talk at the input of conv3, fc6 and fc7 and at the output layer, the places
Figure 2 draws crossing arrows, and nowhere else. LRN needs no communication: each tower
normalises its own maps, as the grouped net does (``LocalResponseNorm(groups=2)``).

fc8: the paper says only that fully-connected neurons see all of the previous layer. Splitting
fc8 by *input* (each tower multiplies its own 2048 fc7 outputs by its 1000x2048 block and the
towers add their partial logits) computes exactly that, sends ``N x classes`` numbers instead of
gathering fc7's ``N x 4096`` first, and works for any number of classes, odd ones included.

Dropout is applied to each tower's own outputs *before* they are gathered, so both towers see
the same dropped units, as a single net would; masks are drawn per rank.

Parameters can be plain tensors (tests, raw torch.distributed) or DTensors on a 1-D device mesh
(:meth:`TowerAlexNet.to_dtensors`): then a parameter's global view is the grouped net's tensor,
which is what lets Lightning's ``ModelParallelStrategy`` gather a full, grouped checkpoint and
put each tower's slice back on load.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from alexnet.models import build_model
from alexnet.models.alexnet import AlexNet
from alexnet.parallel.comm import gather_towers, sum_towers

TOWERS = 2

# Parameter name -> the dim along which the grouped tensor is cut into the towers' slices;
# None: every tower holds the whole tensor (fc8's bias, added once after the sum).
SHARD_DIMS: dict[str, int | None] = {
    **{f"conv{i}.{p}": 0 for i in range(1, 6) for p in ("weight", "bias")},
    **{f"fc{i}.{p}": 0 for i in (6, 7) for p in ("weight", "bias")},
    "fc8.weight": 1,
    "fc8.bias": None,
}


def _check_rank(rank: int, world_size: int) -> None:
    if world_size != TOWERS:
        raise ValueError(f"world_size={world_size}: the paper's net has exactly {TOWERS} towers")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, {world_size})")


def tower_state_dict(
    grouped: Mapping[str, torch.Tensor], rank: int, world_size: int = TOWERS
) -> dict[str, torch.Tensor]:
    """Tower ``rank``'s tensors, cut exactly from the grouped net's state dict (copies)."""
    _check_rank(rank, world_size)
    out = {}
    for name, dim in SHARD_DIMS.items():
        full = grouped[name]
        out[name] = full.clone() if dim is None else full.chunk(world_size, dim)[rank].clone()
    return out


def grouped_state_dict(towers: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The grouped net's state dict from every tower's, in rank order (exact concatenation).

    Replicated tensors must agree across towers: a mismatch means the towers drifted apart (or
    a checkpoint mixed them up), and is an error rather than a silent pick of one copy.
    """
    _check_rank(0, len(towers))
    out = {}
    for name, dim in SHARD_DIMS.items():
        parts = [t[name] for t in towers]
        if dim is None:
            if not all(torch.equal(parts[0], p) for p in parts[1:]):
                raise ValueError(f"{name} is replicated but differs between the towers")
            out[name] = parts[0].clone()
        else:
            out[name] = torch.cat(parts, dim)
    return out


def _local(p: torch.Tensor | None) -> torch.Tensor | None:
    """The tensor this rank computes with (a DTensor parameter's own shard)."""
    return p.to_local() if hasattr(p, "to_local") else p


def _tower_layer(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """A dense conv/linear layer shaped like ``weight``, holding ``weight`` and ``bias``.

    A grouped conv's weight is ``(out, in/groups, k, k)``, so one tower's slice is an ordinary
    conv over ``in/groups`` channels: its own maps for conv2/4/5, all maps for conv3.
    """
    if isinstance(layer, nn.Conv2d):
        local = nn.Conv2d(
            weight.shape[1],
            weight.shape[0],
            layer.kernel_size,
            layer.stride,
            layer.padding,
            device="meta",
        )
    else:
        local = nn.Linear(weight.shape[1], weight.shape[0], device="meta")
    local.weight = nn.Parameter(weight)
    local.bias = nn.Parameter(bias)
    return local


def _tower_lrn(norm: nn.Module) -> nn.Module:
    # The grouped net's LRN normalises each tower's block on its own; one tower has one block.
    if isinstance(norm, nn.Identity):
        return nn.Identity()
    local = copy.deepcopy(norm)
    local.groups = 1
    return local


class TowerAlexNet(nn.Module):
    """One tower of a two-tower :class:`~alexnet.models.AlexNet` (or ``AlexNetCifar``).

    Build it from the grouped net, on every rank from the same weights (same seed), so the two
    towers together start exactly where the single-process ``towers=2`` net starts::

        tower = TowerAlexNet(AlexNetCifar(towers=2), rank=dist.get_rank())

    ``forward`` takes the full batch (the same on both ranks) and returns the full logits
    ``(N, num_classes)``, identical on both ranks. ``group`` is the process group of the two
    towers (default: the world, which must then have two ranks).
    """

    def __init__(self, grouped: AlexNet, rank: int, world_size: int = TOWERS, group=None) -> None:
        super().__init__()
        if not isinstance(grouped, AlexNet) or getattr(grouped.conv2, "groups", 1) != TOWERS:
            raise ValueError("TowerAlexNet splits an AlexNet/AlexNetCifar built with towers=2")
        _check_rank(rank, world_size)
        self.rank, self.world_size, self.group = rank, world_size, group
        state = tower_state_dict(grouped.state_dict(), rank, world_size)
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            layer = getattr(grouped, name)
            setattr(self, name, _tower_layer(layer, state[f"{name}.weight"], state[f"{name}.bias"]))
        self.act = copy.deepcopy(grouped.act)
        self.norm1, self.norm2 = _tower_lrn(grouped.norm1), _tower_lrn(grouped.norm2)
        self.pool1, self.pool2, self.pool5 = (
            copy.deepcopy(grouped.pool1),
            copy.deepcopy(grouped.pool2),
            copy.deepcopy(grouped.pool5),
        )
        self.drop6, self.drop7 = copy.deepcopy(grouped.drop6), copy.deepcopy(grouped.drop7)

    # -- the computation, in Figure 2's order --------------------------------------------------
    def _conv(self, layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, _local(layer.weight), _local(layer.bias), layer.stride, layer.padding)

    def _linear(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _local(layer.weight), _local(layer.bias))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """conv1..pool5 of this tower: ``(N, 128, final_map, final_map)`` in the paper's net."""
        x = self.pool1(self.norm1(self.act(self._conv(self.conv1, x))))
        x = self.pool2(self.norm2(self.act(self._conv(self.conv2, x))))
        x = gather_towers(x, self.group)  # conv3 reads both towers' conv2 maps
        x = self.act(self._conv(self.conv3, x))
        x = self.act(self._conv(self.conv4, x))
        return self.pool5(self.act(self._conv(self.conv5, x)))

    def embed_local(self, x: torch.Tensor) -> torch.Tensor:
        """This tower's half of the last hidden layer (fc7 after its activation)."""
        x = gather_towers(self.drop6(torch.flatten(self.features(x), 1)), self.group)
        x = self.act(self._linear(self.fc6, x))
        x = gather_towers(self.drop7(x), self.group)  # fc7 reads both towers' fc6 neurons
        return self.act(self._linear(self.fc7, x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The full logits ``(N, num_classes)``, the same on both ranks."""
        partial = F.linear(self.embed_local(x), _local(self.fc8.weight))
        return sum_towers(partial, self.group) + _local(self.fc8.bias)

    # -- parameters as slices of the grouped net -----------------------------------------------
    def to_dtensors(self, mesh) -> TowerAlexNet:
        """Turn every parameter into a DTensor on the 1-D ``mesh`` of the two towers whose global
        view is the grouped net's tensor (``Shard(dim)`` per :data:`SHARD_DIMS`, ``Replicate``
        for fc8's bias). The computation still runs on the local shards."""
        from torch.distributed.tensor import DTensor, Replicate, Shard

        if mesh.ndim != 1 or mesh.size() != self.world_size:
            raise ValueError(f"need a 1-D mesh of {self.world_size} ranks, got {mesh}")
        for name, dim in SHARD_DIMS.items():
            module_name, param_name = name.rsplit(".", 1)
            module = self.get_submodule(module_name)
            placement = Replicate() if dim is None else Shard(dim)
            local = getattr(module, param_name).data
            dtensor = DTensor.from_local(local, mesh, [placement], run_check=False)
            setattr(module, param_name, nn.Parameter(dtensor))
        return self

    def local_state_dict(self) -> dict[str, torch.Tensor]:
        """This tower's own tensors (local shards), keyed like the grouped net's."""
        return {k: _local(v).detach() for k, v in self.state_dict().items()}


def build_tower_model(
    name: str, rank: int, world_size: int = TOWERS, group=None, **kwargs
) -> TowerAlexNet:
    """Tower ``rank`` of the net ``build_model(name, **kwargs)`` would build (``towers`` must be 2).

    Every rank builds the whole grouped net first and keeps its slices, so with the same seed on
    both ranks the towers start from the single-process net's weights, never from two copies of
    one tower's random draw.
    """
    if kwargs.get("towers", TOWERS) != TOWERS:
        raise ValueError(f"towers={kwargs['towers']}: the tower split needs model.towers=2")
    return TowerAlexNet(build_model(name, **kwargs), rank, world_size, group)
