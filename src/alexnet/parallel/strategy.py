"""`trainer=towers`: the paper's two-GPU split driven by Lightning's ModelParallelStrategy.

:class:`TowerStrategy` is ``ModelParallelStrategy`` pinned to the paper's layout (two processes,
one tower each, no data parallelism) and to single-file checkpoints. :class:`TowerClassifier`
is the usual :class:`~alexnet.training.module.Classifier` whose ``configure_model`` swaps the
grouped net for this rank's :class:`~alexnet.parallel.towers.TowerAlexNet`, with its parameters as
DTensors whose global view is the grouped net's tensors.

Checkpoints: the strategy gathers every DTensor into its full (grouped) tensor on save, so a
towers checkpoint *is* a checkpoint of the single-process ``towers=2`` net:
``Classifier.load_from_checkpoint`` and ``python -m alexnet.eval`` read it unchanged, and on
load (resume, test) each rank gets its own slice back. Plain tensors would not work here: the
strategy would merge the two ranks' same-named tensors into one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from alexnet.parallel.comm import broadcast_from_first_tower
from alexnet.parallel.towers import TOWERS, TowerAlexNet
from alexnet.training.module import Classifier, OptimizerFactory, SchedulerFactory

TOWER_MODELS = ("alexnet", "alexnet_cifar")
# Lightning precision -> the dtype conv1 computes in, hence the dtype the batch is sent in.
WIRE_DTYPES = {
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "16-mixed": torch.float16,
    "16-true": torch.float16,
}


def check_tower_world(num_nodes: int, num_devices: int) -> None:
    """One process per tower: exactly two in all."""
    if num_nodes * num_devices != TOWERS:
        raise ValueError(
            f"trainer=towers runs one tower per process and needs exactly {TOWERS} processes, "
            f"got trainer.num_nodes={num_nodes} x trainer.devices={num_devices}; set "
            "trainer.devices=2 (or trainer.num_nodes=2 trainer.devices=1), or use trainer=ddp "
            "for more devices"
        )


class TowerStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` with a (1 data-parallel x 2 tower) mesh and full checkpoints.

    The mesh's ``"tensor_parallel"`` dimension is the towers. Checkpoints are single files
    holding the grouped net (60M parameters gather cheaply on rank 0); a shared file system is
    needed across nodes, as for any Lightning checkpoint that every rank loads.
    """

    data_parallel_size = 1

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            data_parallel_size=1,
            tensor_parallel_size=TOWERS,
            save_distributed_checkpoint=False,
            **kwargs,
        )

    def setup_environment(self) -> None:
        check_tower_world(self.num_nodes, self.num_processes)
        super().setup_environment()


def check_tower_model(model: Mapping[str, Any]) -> None:
    name, towers = model.get("name"), model.get("towers", TOWERS)
    if name not in TOWER_MODELS:
        raise ValueError(
            f"trainer=towers splits {' or '.join(TOWER_MODELS)}, not "
            f"model.name={name!r}; pick model=alexnet or model=alexnet_cifar"
        )
    if towers != TOWERS:
        raise ValueError(f"trainer=towers needs model.towers=2, got {towers}")


class TowerClassifier(Classifier):
    """:class:`Classifier` with its net split over the two ranks of :class:`TowerStrategy`.

    Same constructor and hyper-parameters as ``Classifier`` (so its checkpoints load as one).
    The grouped net is built in ``__init__`` on every rank with the same seed; each rank then
    keeps its tower's slices, so training starts from exactly the single-process weights.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        check_tower_model(model)
        if compile:
            # Untested: the collectives inside autograd Functions break dynamo's graph.
            raise ValueError("compile=true is not supported with trainer=towers; set compile=false")
        super().__init__(model, optimizer, scheduler, channels_last, compile)

    def configure_model(self) -> None:
        if isinstance(self.net, TowerAlexNet):  # called again by trainer.test after fit
            return
        mesh = self.device_mesh["tensor_parallel"]
        tower = TowerAlexNet(self.net, rank=mesh.get_local_rank(), group=mesh.get_group())
        self.net = tower.to_dtensors(mesh)
        object.__setattr__(self, "forward_net", self.net)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # Both ranks load data, but only the first tower's batch is used: augmentation seeds
        # differ per rank, and the towers must see the same images. Under 16-bit precisions
        # conv1 reads the image in 16 bits anyway, so it travels in 16 bits: half the bytes,
        # the same result.
        x, y = batch
        wire = x.to(WIRE_DTYPES.get(str(self.trainer.precision), x.dtype))
        broadcast_from_first_tower([wire, y], self.net.group)
        return wire.to(x.dtype), y
