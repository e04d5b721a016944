"""The one way the benchmarks time code: warm up, synchronise the device, time, synchronise."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(
    fn: Callable[[int], object], device: torch.device, warmup: int, iters: int
) -> float:
    """Mean wall seconds of ``fn(i)`` over ``iters`` calls after ``warmup`` untimed ones; ``i``
    counts the calls from 0 (the warm-up ones included). On CUDA the interval is measured with
    CUDA events around the timed calls, elsewhere with ``time.perf_counter``."""
    for i in range(warmup):
        fn(i)
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(warmup, warmup + iters):
            fn(i)
        end.record()
        sync(device)
        return start.elapsed_time(end) / 1e3 / iters
    begin = time.perf_counter()
    for i in range(warmup, warmup + iters):
        fn(i)
    return (time.perf_counter() - begin) / iters


def step_times(
    fn: Callable[[], object], steps: int, before: Callable[[], object] | None = None
) -> list[float]:
    """Wall seconds of each of ``steps`` calls of ``fn`` after one untimed warm-up call;
    ``before`` (a barrier between processes, say) runs untimed before each call."""
    times = []
    for _ in range(steps + 1):
        if before is not None:
            before()
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return times[1:]


__all__ = ["seconds_per_call", "step_times", "sync"]
