"""Local response normalisation (paper section 3.3).

    b[c] = a[c] / (k + alpha * sum_{c' in window(c)} a[c']^2) ** beta

with the window of ``size`` channels centred on ``c`` and clipped at the first and last
channel, k=2, size=5, alpha=1e-4, beta=0.75 in the paper.

Two conventions exist for ``alpha`` and both are exposed through ``convention``:

- ``"paper"``: ``alpha`` multiplies the sum, exactly as the formula above is printed.
- ``"torch"``: ``alpha`` multiplies the *mean* over the window (alpha / size times the sum).
  This is what ``torch.nn.LocalResponseNorm``, cuda-convnet (whose config says scale=0.0001)
  and Caffe compute, so it is probably what the original code ran with alpha=1e-4.

The two agree when the torch-convention alpha is ``size`` times the paper one.

``groups`` normalises each contiguous block of ``C / groups`` channels on its own: with the
paper's two towers each GPU normalised only the maps it held (cuda-convnet's response norm
runs per GPU), so a window never reaches across the tower boundary.

How it is computed (`lrn_banded`): the window sum over channels is one matrix product with a
``C x C`` 0/1 band matrix (block-diagonal for ``groups``), which BLAS runs at matmul speed in
either memory format, and the backward is the formula's own derivative (the band matrix is
symmetric, so the same product sums the gradient over the windows that hold each channel)::

    grad_a[j] = g[j] d[j]^-beta - 2 beta s a[j] sum_{c : j in window(c)} g[c] a[c] d[c]^(-beta-1)

On CPU this is 3-4x faster forward+backward than ``F.local_response_norm`` (an ``avg_pool3d``
over a padded copy, then autograd through every step). Sums and powers run in fp32 (fp64 stays
fp64) with autocast off, so under bf16 autocast the normalisation keeps full precision; the
output has the input's dtype.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

CONVENTIONS = ("paper", "torch")
# banded: `lrn_banded` (the default); functional: torch's F.local_response_norm, autograd through
# its ops -- what this layer ran before, kept as the benchmarks' baseline.
IMPLS = ("banded", "functional")


def lrn_reference(
    a: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> torch.Tensor:
    """The paper's formula written out with an explicit loop over channels (slow; for tests)."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels - 1, c + size // 2)
        denom = k + alpha * (a[:, lo : hi + 1] ** 2).sum(dim=1)
        out[:, c] = a[:, c] / denom**beta
    return out


def window_band(channels: int, size: int, groups: int, dtype, device) -> torch.Tensor:
    """The ``C x C`` matrix with 1 where channel ``j`` lies in the window of channel ``c``:
    ``|c - j| <= size // 2`` within the same group of ``C / groups`` channels."""
    idx = torch.arange(channels, device=device)
    near = (idx[:, None] - idx[None, :]).abs() <= size // 2
    same_group = (idx[:, None] // (channels // groups)) == (idx[None, :] // (channels // groups))
    return (near & same_group).to(dtype)


def _window_sum(t: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """``t`` (N, C, ...) summed over each channel's window, in ``t``'s memory format."""
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = t.shape
        rows = t.permute(0, 2, 3, 1).reshape(-1, c)  # a view: (N*H*W, C)
        return (rows @ band).view(n, h, w, c).permute(0, 3, 1, 2)
    return (band @ t.reshape(t.shape[0], t.shape[1], -1)).view(t.shape)


def _full_precision(device: torch.device):
    """Autocast off: the sums and powers must not be run in bf16."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()  # meta tensors (shape checks) have no autocast


class _BandedLRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, size, alpha_per_sum, beta, k, groups):
        compute = torch.promote_types(a.dtype, torch.float32)
        with _full_precision(a.device):
            af = a.to(compute)
            band = window_band(a.shape[1], size, groups, compute, a.device)
            d = _window_sum(af * af, band).mul_(alpha_per_sum).add_(k)
            d_pow = d.pow(-beta)
            ctx.save_for_backward(a, d, d_pow, band)
            ctx.coef = 2.0 * beta * alpha_per_sum
            return (af * d_pow).to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        a, d, d_pow, band = ctx.saved_tensors
        with _full_precision(a.device):
            af, g = a.to(d.dtype), grad.to(d.dtype)
            g_scaled = g * d_pow
            spread = _window_sum(g_scaled * af / d, band)
            grad_a = g_scaled - ctx.coef * af * spread
            return grad_a.to(a.dtype), None, None, None, None, None


def lrn_banded(
    x: torch.Tensor, size: int = 5, alpha_per_sum: float = 1e-4, beta: float = 0.75,
    k: float = 2.0, groups: int = 1,
) -> torch.Tensor:
    """The paper's LRN of (N, C, H, W) ``x`` with ``alpha_per_sum`` multiplying the window's sum
    of squares; windows stop at the boundaries of ``groups`` channel blocks (module docstring)."""
    if x.shape[1] % groups:
        raise ValueError(f"LRN groups={groups} does not divide {x.shape[1]} channels")
    if torch.compiler.is_compiling():
        # Inside torch.compile the plain ops are fused by the compiler, and an autocast switch
        # inside an autograd.Function leaks into the rest of the traced graph.
        return _lrn_plain(x, size, alpha_per_sum, beta, k, groups)
    return _BandedLRN.apply(x, size, alpha_per_sum, beta, k, groups)


def _lrn_plain(x, size, alpha_per_sum, beta, k, groups) -> torch.Tensor:
    # F.local_response_norm divides its alpha by size; hand it alpha_per_sum * size.
    shape = x.shape
    per_group = x.reshape(shape[0] * groups, shape[1] // groups, *shape[2:])
    return F.local_response_norm(per_group, size, alpha_per_sum * size, beta, k).reshape(shape)


class LocalResponseNorm(nn.Module):
    """LRN across channels with an explicit alpha convention (see module docstring)."""

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        convention: str = "paper",
        groups: int = 1,
        impl: str = "banded",
    ) -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"LRN impl={impl!r} is unknown; use one of {', '.join(IMPLS)}")
        if convention not in CONVENTIONS:
            raise ValueError(
                f"lrn_convention={convention!r} is unknown; use one of {', '.join(CONVENTIONS)}"
            )
        if size < 1 or size % 2 == 0:
            # An even window cannot be centred on c: torch pads it asymmetrically, while the
            # paper's sum from c - n/2 to c + n/2 covers n + 1 channels. Neither is the paper's.
            raise ValueError(f"LRN size={size!r} must be a positive odd number")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention = convention
        self.groups = groups
        self.impl = impl

    @property
    def alpha_per_sum(self) -> float:
        """The factor that multiplies the plain sum of squares in the window."""
        return self.alpha if self.convention == "paper" else self.alpha / self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        args = (x, self.size, self.alpha_per_sum, self.beta, self.k, self.groups)
        return lrn_banded(*args) if self.impl == "banded" else _lrn_plain(*args)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"convention={self.convention!r}, groups={self.groups}, impl={self.impl!r}"
        )
