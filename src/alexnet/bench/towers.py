"""How much the towers talk, and what a towers step costs: ``python -m alexnet.bench.towers``.

Prints (1) the numbers each tower sends per training step, from the layer shapes, and (2) the
wall time of one SGD step (forward, backward, update) of the two towers on two gloo processes
against the grouped net in one process, on this machine's CPU, plus the time the towers'
collectives alone take with the same shapes. Figures are printed, never asserted: timings on a
shared CPU are noisy, and a CPU says little about GPUs.

    python -m alexnet.bench.towers --model alexnet_cifar --batch 32
    python -m alexnet.bench.towers --model alexnet --batch 8 --steps 3
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F

from alexnet.bench.timer import step_times
from alexnet.models import build_model
from alexnet.parallel.comm import gather_towers, sum_towers
from alexnet.parallel.towers import TOWERS, TowerAlexNet


@dataclass(frozen=True)
class CommVolume:
    """Numbers each tower sends per image, by where the paper's arrows cross the towers."""

    conv3_input: int  # its half of pool2's maps (all-gather fwd, reduce-scatter bwd)
    fc6_input: int  # its half of pool5's maps
    fc7_input: int  # its half of fc6's neurons
    output: int  # the partial logits (two-rank all-reduce, forward only)
    image: int  # the input image, first tower to second only (both must see one batch)

    @property
    def forward(self) -> int:
        return self.conv3_input + self.fc6_input + self.fc7_input + self.output

    @property
    def backward(self) -> int:
        # Each gather's backward sends the other tower the gradient of its slice: same sizes.
        return self.conv3_input + self.fc6_input + self.fc7_input


def comm_volume(name: str = "alexnet", **kwargs) -> CommVolume:
    """Per-image traffic of the two-tower split of ``build_model(name, **kwargs)``.

    A two-rank all-gather or reduce-scatter sends each rank's half once; a two-rank ring
    all-reduce of ``k`` numbers sends ``k`` per rank. The map sizes come from one forward on
    the meta device (shapes only, no arithmetic).
    """
    sizes: dict[str, int] = {}
    with torch.device("meta"):
        net = build_model(name, **kwargs)
        for layer in ("pool2", "pool5", "fc6", "fc8"):
            getattr(net, layer).register_forward_hook(
                lambda _m, _i, out, layer=layer: sizes.__setitem__(layer, out[0].numel())
            )
        net(torch.empty(1, 3, net.input_size, net.input_size))
    return CommVolume(
        conv3_input=sizes["pool2"] // TOWERS,
        fc6_input=sizes["pool5"] // TOWERS,
        fc7_input=sizes["fc6"] // TOWERS,
        output=sizes["fc8"],
        image=3 * net.input_size**2,
    )


# --------------------------------------------------------------------------------------------
# Step timing on CPU
# --------------------------------------------------------------------------------------------


def _batch(net, batch: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, net.input_size, net.input_size, generator=g)
    return x, torch.randint(0, classes, (batch,), generator=g)


def _step_times(net, x, y, steps: int, barrier=None) -> list[float]:
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step_times(step, steps, before=barrier)  # the untimed first step warms allocators


def _comm_times(vol: CommVolume, batch: int, steps: int) -> list[float]:
    """The towers' collectives alone (forward and backward), shapes as in a real step."""

    def step():
        for n in (vol.conv3_input, vol.fc6_input, vol.fc7_input):
            half = torch.zeros(batch, n, requires_grad=True)
            gather_towers(half).sum().backward()  # all-gather + reduce-scatter
        sum_towers(torch.zeros(batch, vol.output))

    return step_times(step, steps, before=dist.barrier)


def _tower_worker(
    rank: int, port: int, name: str, kwargs: dict, batch: int, steps: int, out: str
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=TOWERS
    )
    try:
        torch.manual_seed(0)
        grouped = build_model(name, **kwargs)
        x, y = _batch(grouped, batch, kwargs["num_classes"])
        tower = TowerAlexNet(grouped, rank)
        del grouped
        step = _step_times(tower, x, y, steps, barrier=dist.barrier)
        comm = _comm_times(comm_volume(name, **kwargs), batch, steps)
        if rank == 0:
            torch.save({"step": step, "comm": comm}, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_towers(name: str, kwargs: dict, batch: int, steps: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.pt")
        mp.spawn(
            _tower_worker,
            args=(_free_port(), name, kwargs, batch, steps, out),
            nprocs=TOWERS,
            join=True,
        )
        return torch.load(out, weights_only=True)


def time_grouped(name: str, kwargs: dict, batch: int, steps: int, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_model(name, **kwargs)
    return _step_times(net, *_batch(net, batch, kwargs["num_classes"]), steps)


# --------------------------------------------------------------------------------------------


def _ms(times: list[float]) -> str:
    return f"{1e3 * statistics.median(times):8.1f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet_cifar", choices=["alexnet", "alexnet_cifar"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=None, help="default: 1000 / 10")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    classes = args.classes or (1000 if args.model == "alexnet" else 10)
    kwargs = {"num_classes": classes, "towers": 2, "dropout": 0.0}

    vol = comm_volume(args.model, **kwargs)
    print(f"{args.model}, {classes} classes: numbers each tower sends per image")
    for field in ("conv3_input", "fc6_input", "fc7_input", "output"):
        print(f"  {field:12s} {getattr(vol, field):>8,d}")
    print(
        f"  forward {vol.forward:,d} + backward {vol.backward:,d}; image (rank 0 -> 1) "
        f"{vol.image:,d}"
    )
    for n in (args.batch, 128):
        feats, image = (vol.forward + vol.backward) * n, vol.image * n
        print(
            f"  per step at batch {n}: features {feats * 4 / 2**20:.1f} MiB fp32 "
            f"({feats * 2 / 2**20:.1f} MiB bf16), image {image * 4 / 2**20:.1f} MiB fp32 "
            f"({image * 2 / 2**20:.1f} MiB bf16)"
        )

    print(f"\nSGD step on CPU, batch {args.batch}, median of {args.steps} (after one warm-up):")
    towers = time_towers(args.model, kwargs, args.batch, args.steps)
    one = time_grouped(args.model, kwargs, args.batch, args.steps, threads=1)
    two = time_grouped(args.model, kwargs, args.batch, args.steps, threads=2)
    print(f"  grouped net, 1 process x 1 thread   {_ms(one)}")
    print(f"  grouped net, 1 process x 2 threads  {_ms(two)}")
    print(f"  towers,      2 processes x 1 thread {_ms(towers['step'])}")
    print(f"    the collectives alone, same shapes {_ms(towers['comm'])}")


if __name__ == "__main__":
    main()
