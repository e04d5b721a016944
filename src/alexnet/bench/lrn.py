"""The LRN layer forward + backward on one input: torch's eager ``F.local_response_norm``, the
same under ``torch.compile``, and the fused Triton kernels (``alexnet.kernels.lrn``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from alexnet.bench.timer import seconds_per_call
from alexnet.kernels.lrn import fused_lrn_available, lrn_triton


def _ms(fn: Callable[[], None], device: torch.device, warmup: int, iters: int) -> float:
    return 1e3 * seconds_per_call(lambda _i: fn(), device, warmup, iters)


def bench_lrn(
    shape: tuple[int, int, int, int] = (256, 96, 55, 55),
    dtype: torch.dtype = torch.bfloat16,
    channels_last: bool = True,
    device: str = "cuda",
    *,
    size: int = 5,
    alpha_per_sum: float = 1e-4,
    beta: float = 0.75,
    k: float = 2.0,
    compiled: bool = True,
    warmup: int = 3,
    iters: int = 20,
) -> dict:
    """Time forward + backward (ms per call) of LRN: eager torch, torch.compile'd, fused kernel.

    Returns ``eager_ms``, ``compiled_ms``, ``fused_ms`` (None when skipped or failed; failures
    are in ``errors``), ``*_max_abs_err`` (largest |error| of output and input-gradient against
    torch's LRN run in float32 on the same input), and ``bytes_fwd_bwd``, what a one-pass
    fwd+bwd must move (read a, write b; read a and g, write grad), for a roofline estimate.

    CUDA times come from CUDA events, CPU times from ``time.perf_counter``: on CPU pass a tiny
    ``shape`` and float32 (torch's CPU LRN has no bf16 kernel); the fused kernel runs there only
    under TRITON_INTERPRET=1. ``compiled=False`` skips torch.compile. Nothing is asserted.
    """
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=dev, dtype=dtype).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    g = torch.randn_like(x)

    def eager(t):
        return F.local_response_norm(t, size, alpha_per_sum * size, beta, k)

    def fused(t):
        return lrn_triton(t, size, alpha_per_sum, beta, k)

    def step(fn):
        def run():
            x.grad = None
            fn(x).backward(g)

        return run

    def max_abs_err(fn) -> float:
        y = fn(x)
        (dx,) = torch.autograd.grad(y, x, g)
        return max((y.float() - ref_y).abs().max().item(), (dx.float() - ref_g).abs().max().item())

    x32 = x.detach().float().requires_grad_(True)
    ref_y = eager(x32)
    (ref_g,) = torch.autograd.grad(ref_y, x32, g.float())
    ref_y = ref_y.detach()

    candidates = {"eager": eager}
    if compiled:
        candidates["compiled"] = torch.compile(eager)
    if fused_lrn_available(x):
        candidates["fused"] = fused
    result = {
        "shape": tuple(shape),
        "dtype": str(dtype).replace("torch.", ""),
        "channels_last": channels_last,
        "device": str(dev),
        "bytes_fwd_bwd": 5 * x.numel() * x.element_size(),
        "errors": {},
    }
    for name in ("eager", "compiled", "fused"):
        result[f"{name}_ms"] = result[f"{name}_max_abs_err"] = None
        if name not in candidates:
            continue
        try:
            result[f"{name}_ms"] = _ms(step(candidates[name]), dev, warmup, iters)
            result[f"{name}_max_abs_err"] = max_abs_err(candidates[name])
        except Exception as err:  # a benchmark reports what failed and goes on
            result["errors"][name] = f"{type(err).__name__}: {err}"
    return result


__all__ = ["bench_lrn"]
