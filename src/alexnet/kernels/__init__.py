"""Hand-written kernels for the network's hot spots (Triton, with torch fallbacks)."""

from alexnet.kernels.lrn import (
    FusedLocalResponseNorm,
    fused_lrn_available,
    lrn_triton,
)

__all__ = ["FusedLocalResponseNorm", "fused_lrn_available", "lrn_triton"]
