"""Run a function on two gloo processes on 127.0.0.1 (torch.multiprocessing, forked)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, port: int, world: int, args: tuple) -> None:
    torch.set_num_threads(1)  # two processes on the CI's two cores
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def start_ranks(fn, args: tuple, world: int = 2) -> None:
    """``fn(rank, *args)`` on ``world`` processes forked from this one, joined; a failure in any
    of them fails the caller. Forked, a rank starts with the modules this process has imported: a
    spawned one imports torch and Lightning again (~4 s of CPU). The ranks pin one intra-op
    thread, as torch does in a forked child anyway."""
    mp.start_processes(fn, args=args, nprocs=world, join=True, start_method="fork")


def run_ranks(fn, *args, world: int = 2) -> None:
    """``fn(rank, *args)`` on ``world`` processes in one gloo process group."""
    start_ranks(_entry, (fn, free_port(), world, args), world)
