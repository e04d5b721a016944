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
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CONVENTIONS = ("paper", "torch")


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
    ) -> None:
        super().__init__()
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

    @property
    def alpha_per_sum(self) -> float:
        """The factor that multiplies the plain sum of squares in the window."""
        return self.alpha if self.convention == "paper" else self.alpha / self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups > 1:
            n, c, h, w = x.shape
            per_tower = self._normalise(x.reshape(n * self.groups, c // self.groups, h, w))
            return per_tower.reshape(n, c, h, w)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        # F.local_response_norm divides its alpha by size; hand it alpha_per_sum * size.
        return F.local_response_norm(
            x, self.size, self.alpha_per_sum * self.size, self.beta, self.k
        )

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"convention={self.convention!r}, groups={self.groups}"
        )
