"""A convolution split across the paper's towers, computed one of three identical ways.

The paper's conv2, conv4 and conv5 see only the maps of their own tower (section 3.2): a grouped
convolution, ``groups=towers``. cuDNN's grouped kernels are slow: on an H100 (bf16,
channels_last) conv2 with ``groups=2`` took longer than the dense conv with twice the FLOPs. So
:class:`TowerConv2d` keeps the grouped layer's parameters (``weight`` of shape
``(out, in / groups, kh, kw)`` and ``bias``, the state_dict of a plain ``nn.Conv2d(...,
groups=g)``) and lets ``impl`` choose how the product is computed:

- ``"grouped"``: ``F.conv2d(..., groups=g)``, the plain PyTorch layer (the reference).
- ``"split"``: ``g`` dense convolutions, tower ``t``'s input channels with tower ``t``'s
  kernels, outputs concatenated along channels in tower order.
- ``"masked"``: one dense convolution with the block-diagonal weight whose diagonal blocks are
  the towers' kernels and whose other blocks are zero (``g`` times the FLOPs, but one dense
  cuDNN/cuBLAS kernel). The gradient reaching ``weight`` is the diagonal blocks of the dense
  gradient: the zeros are constants, not parameters, so they stay zero.

All three compute the same function of the same parameters; ``tests/models/test_tower_conv.py``
checks outputs and gradients against each other. Which is fastest depends on the GPU and the
library versions: ``make bench`` measures them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CONV_IMPLS = ("grouped", "split", "masked")


def block_diagonal_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense ``(out, in, kh, kw)`` weight equal to a grouped conv's ``(out, in/g, kh, kw)``.

    Built as one broadcast multiply with the identity (no in-place writes), so autograd and
    torch.compile see a plain differentiable expression.
    """
    out_ch, in_per_group, kh, kw = weight.shape
    blocks = weight.reshape(groups, out_ch // groups, 1, in_per_group, kh, kw)
    eye = torch.eye(groups, dtype=weight.dtype, device=weight.device)
    dense = blocks * eye.reshape(groups, 1, groups, 1, 1, 1)  # (g, out/g, g, in/g, kh, kw)
    return dense.reshape(out_ch, groups * in_per_group, kh, kw)


class TowerConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups`` towers, computed as ``impl`` says (see module docstring).

    Same constructor as ``nn.Conv2d`` plus ``impl``; same parameters and state_dict whatever
    ``impl`` is, so a checkpoint trained with one implementation loads into any other. Padding
    modes other than ``"zeros"`` are not supported.
    """

    def __init__(self, *args, impl: str = "grouped", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if impl not in CONV_IMPLS:
            choices = ", ".join(repr(c) for c in CONV_IMPLS)
            raise ValueError(f"conv_impl={impl!r} is unknown; choose one of {choices}")
        if self.padding_mode != "zeros":
            raise ValueError(
                f"TowerConv2d supports padding_mode='zeros' only, not {self.padding_mode!r}"
            )
        self.impl = impl

    def _dense(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1 or self.impl == "grouped":
            return super().forward(x)
        if self.impl == "masked":
            return self._dense(x, block_diagonal_weight(self.weight, self.groups), self.bias)
        xs = x.chunk(self.groups, dim=1)
        ws = self.weight.chunk(self.groups, dim=0)
        bs = self.bias.chunk(self.groups) if self.bias is not None else (None,) * self.groups
        return torch.cat([self._dense(*args) for args in zip(xs, ws, bs, strict=True)], dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self.impl!r}"


__all__ = ["CONV_IMPLS", "TowerConv2d", "block_diagonal_weight"]
