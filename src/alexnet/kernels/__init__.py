"""Hand-written kernels for the network's hot spots (Triton, with torch fallbacks)."""

from alexnet.kernels.lrn import (
    FusedLocalResponseNorm,
    bench_lrn,
    fused_lrn_available,
    lrn_triton,
)

__all__ = ["FusedLocalResponseNorm", "bench_lrn", "fused_lrn_available", "lrn_triton"]
