"""Fused local response normalisation (paper section 3.3) as Triton kernels.

Forward, in one pass over ``a`` (read once from DRAM, write ``b`` once)::

    d[c] = k + s * sum_{c' in window(c)} a[c']^2        s = alpha_per_sum
    b[c] = a[c] * d[c] ** -beta

Backward, in one pass over ``a`` and the upstream gradient ``g`` (``d`` is recomputed, so nothing
but ``a`` is saved for backward)::

    grad_a[j] = g[j] * d[j] ** -beta
                - 2 * beta * s * a[j] * sum_{c : j in window(c)} g[c] * a[c] * d[c] ** (-beta - 1)

``window(c)`` is ``[c - size // 2, c + (size - 1) // 2]`` clipped at the first and last channel
of c's group (``groups`` contiguous blocks of ``C / groups`` channels; 1 group = all channels):
for odd ``size`` (the paper's 5) the centred window of :func:`alexnet.models.lrn.lrn_reference`,
and for even ``size`` the asymmetric one of ``torch.nn.functional.local_response_norm``. Groups
are the paper's two towers: each GPU normalised only the maps it held.

How the kernels are laid out: a program owns a tile of ``BLOCK_P`` pixels x ``BLOCK_C`` channels
of one image and gets the window sum from ``size`` loads of the tile shifted along the channel
axis; the shifted loads hit L1/L2, so DRAM sees each element about once, and channel blocks need
not hold all channels (the halo comes from the shifted loads). The backward loads ``a`` at the
``2 * size - 1`` shifts around ``j`` and ``g`` at the ``size`` channels whose windows hold ``j``,
and rebuilds ``d`` there from registers (``size + 1`` powers per element), instead of saving ``b``
or ``d`` from the forward. All arithmetic is fp32; inputs may be fp32, bf16 or fp16 and the
output has the input's dtype.

Memory formats: NCHW-contiguous and channels_last-contiguous 4-D tensors run as they are (the
output keeps the input's format); any other strides are first copied with ``.contiguous()`` (NCHW).
The gradient is brought to the input's format before the backward kernel.

The kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, slow but exact; what the tests use). The ``@triton.jit`` wrapping is done
lazily at the first launch (and again if the interpreter setting changes), because Triton decides
between compiling and interpreting when ``triton.jit`` runs, not when the kernel is called.

Both directions are ``torch.library`` custom ops (``alexnet::lrn_forward``,
``alexnet::lrn_backward``) with fake implementations and a registered autograd formula, so
``torch.compile`` keeps them in the graph as opaque calls instead of breaking the graph on Triton.
Double backward is not supported.
"""

from collections.abc import Callable
from types import SimpleNamespace

import torch

from alexnet.models.lrn import LocalResponseNorm

try:  # Triton is optional: without it everything falls back to torch.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only on machines without triton
    triton = None
    tl = SimpleNamespace(constexpr=None)  # lets the kernels' annotations below evaluate

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Elements per program tile; the backward keeps more tiles live, so it uses smaller ones.
_FWD_TILE, _BWD_TILE = 1024, 512


# --------------------------------------------------------------------------------------------
# Triton kernels: plain functions here, wrapped with triton.jit in _kernels().
# --------------------------------------------------------------------------------------------


def _lrn_fwd_kernel(
    x_ptr,
    y_ptr,
    C,
    CG,
    HW,
    stride_n,
    stride_c,
    stride_s,
    alpha_per_sum,
    beta,
    k,
    SIZE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    n = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = (p < HW)[:, None]
    row = x_ptr + n * stride_n + p[:, None] * stride_s  # [BLOCK_P, 1] pointers at channel 0
    lo = (c // CG) * CG  # c's group is [lo, hi); empty for the padding lanes c >= C
    hi = tl.minimum(lo + CG, C)

    # Window of channel c: [c - SIZE // 2, c + (SIZE - 1) // 2]; channels outside its group add 0.
    sumsq = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for i in tl.static_range(SIZE):
        cc = c + (i - SIZE // 2)
        ok = p_ok & ((cc >= lo) & (cc < hi))[None, :]
        v = tl.load(row + cc[None, :] * stride_c, mask=ok, other=0.0).to(tl.float32)
        sumsq += v * v

    mask = p_ok & (c < C)[None, :]
    offs = n * stride_n + p[:, None] * stride_s + c[None, :] * stride_c
    a = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    d = k + alpha_per_sum * sumsq
    b = a * tl.exp2(-beta * tl.log2(d))
    tl.store(y_ptr + offs, b.to(y_ptr.dtype.element_ty), mask=mask)


def _lrn_bwd_kernel(
    x_ptr,
    g_ptr,
    dx_ptr,
    C,
    CG,
    HW,
    stride_n,
    stride_c,
    stride_s,
    alpha_per_sum,
    beta,
    k,
    SIZE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    LO: tl.constexpr = SIZE // 2  # window(c) = [c - LO, c + HI]
    HI: tl.constexpr = (SIZE - 1) // 2
    R: tl.constexpr = SIZE - 1  # a is needed at shifts -R..R of j; a_sh[u + R] = a[j + u]
    n = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    j = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = (p < HW)[:, None]
    base = n * stride_n + p[:, None] * stride_s  # [BLOCK_P, 1] offsets at channel 0
    lo = (j // CG) * CG  # j's group [lo, hi): every channel that meets j lies in it
    hi = tl.minimum(lo + CG, C)

    # Load a once at each of the 2 * SIZE - 1 shifts (0 outside the group), as a tuple of tiles.
    cc = j - R
    ok = p_ok & ((cc >= lo) & (cc < hi))[None, :]
    a_sh = (tl.load(x_ptr + base + cc[None, :] * stride_c, mask=ok, other=0.0).to(tl.float32),)
    for iu in tl.static_range(1, 2 * R + 1):
        cc = j + (iu - R)
        ok = p_ok & ((cc >= lo) & (cc < hi))[None, :]
        v = tl.load(x_ptr + base + cc[None, :] * stride_c, mask=ok, other=0.0)
        a_sh = a_sh + (v.to(tl.float32),)

    # The channels c whose window holds j are c = j + e, e in [-HI, LO]. For each, rebuild d[c]
    # from the shifted tiles and accumulate g[c] * a[c] * d[c] ** (-beta - 1); g is 0 outside
    # the group, which drops the c that do not exist or belong to another group. (Shifts are
    # written out inline: a constexpr name cannot be re-bound inside an unrolled loop.)
    acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    g_j = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    log_d_j = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
    for ie in tl.static_range(SIZE):
        cc = j + (ie - HI)
        ok = p_ok & ((cc >= lo) & (cc < hi))[None, :]
        g_c = tl.load(g_ptr + base + cc[None, :] * stride_c, mask=ok, other=0.0).to(tl.float32)
        sumsq = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
        for i in tl.static_range(SIZE):  # window of c = j + e: shifts e - LO .. e + HI
            v = a_sh[ie - HI + i - LO + R]
            sumsq += v * v
        log_d = tl.log2(k + alpha_per_sum * sumsq)
        acc += g_c * a_sh[ie - HI + R] * tl.exp2((-beta - 1.0) * log_d)
        if ie == HI:  # e == 0: c is j itself
            g_j = g_c
            log_d_j = log_d

    mask = p_ok & (j < C)[None, :]
    grad = g_j * tl.exp2(-beta * log_d_j) - (2.0 * beta * alpha_per_sum) * a_sh[R] * acc
    tl.store(dx_ptr + base + j[None, :] * stride_c, grad.to(dx_ptr.dtype.element_ty), mask=mask)


_JIT_CACHE: dict[tuple[bool, bool], tuple[Callable, Callable]] = {}

# In channels_last the window's shifted loads are off by 1..size-1 elements from any alignment,
# so they cannot be vector loads. If Triton knew the strides were multiples of 16 it would give
# each thread 8 contiguous channels (for the one aligned load) and every shifted load would then
# be a scalar load whose 32 lanes are 16 bytes apart across 8 pixels. Hiding that divisibility
# keeps one element per thread and 32 consecutive channels per warp instruction, so every load
# is coalesced. (NCHW keeps it: shifting by a channel moves by H*W and alignment survives.)
_NO_ALIGN_CHANNELS_LAST = ("C", "CG", "HW", "stride_n", "stride_s")


@torch.compiler.assume_constant_result  # read at trace time, so torch.compile does not break
def _interpreting() -> bool:
    """Whether Triton's interpreter is on (TRITON_INTERPRET=1 or triton.knobs)."""
    return bool(triton is not None and triton.knobs.runtime.interpret)


def _kernels(channels_last: bool) -> tuple[Callable, Callable]:
    """The jitted (forward, backward) kernels for the interpreter setting and memory format."""
    if triton is None:
        raise RuntimeError("the fused LRN kernels need triton, which is not installed")
    key = (_interpreting(), channels_last)
    if key not in _JIT_CACHE:
        opts = {"do_not_specialize_on_alignment": _NO_ALIGN_CHANNELS_LAST} if channels_last else {}
        _JIT_CACHE[key] = (
            triton.jit(_lrn_fwd_kernel, **opts),
            triton.jit(_lrn_bwd_kernel, **opts),
        )
    return _JIT_CACHE[key]


# --------------------------------------------------------------------------------------------
# Host side: layouts, block sizes, launches.
# --------------------------------------------------------------------------------------------


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is laid out so, else NCHW (non-dense inputs get copied to NCHW)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _strides(x: torch.Tensor, fmt: torch.memory_format) -> tuple[int, int, int]:
    """(image, channel, pixel) element strides, pixel = h * W + w, for a dense tensor."""
    _, c, h, w = x.shape
    if fmt == torch.channels_last:
        return h * w * c, 1, c
    return c * h * w, h * w, 1


def _blocks(channels: int, fmt: torch.memory_format, tile: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C): wide in channels when they are contiguous, wide in pixels otherwise."""
    cpad = triton.next_power_of_2(channels)
    if fmt == torch.channels_last:
        block_c = min(cpad, 64)
        if channels % block_c and channels % 32 == 0:  # e.g. 96 = 3 x 32: no padded lanes
            block_c = 32
    else:
        block_c = min(cpad, 16)
    return max(tile // block_c, 1), block_c


def _launch(backward: bool, tensors: tuple, ref: torch.Tensor, fmt, params) -> None:
    """Run the forward (x, y) or backward (x, g, dx) kernel on dense tensors laid out as fmt."""
    kernel = _kernels(fmt == torch.channels_last)[int(backward)]
    tile = _BWD_TILE if backward else _FWD_TILE
    size, alpha_per_sum, beta, k, groups = params
    n, c, h, w = ref.shape
    block_p, block_c = _blocks(c, fmt, tile)
    grid = (triton.cdiv(h * w, block_p), triton.cdiv(c, block_c), n)
    args = (*tensors, c, c // groups, h * w, *_strides(ref, fmt))
    args += (float(alpha_per_sum), float(beta), float(k))
    meta = dict(SIZE=int(size), BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4)
    if ref.is_cuda:
        with torch.cuda.device(ref.device):
            kernel[grid](*args, **meta)
    else:  # CPU tensors: only reachable under the interpreter
        kernel[grid](*args, **meta)


def _check_launchable(x: torch.Tensor) -> None:
    if not (x.is_cuda or _interpreting()):
        raise RuntimeError(
            "the fused LRN kernels run on CUDA tensors, or on CPU under TRITON_INTERPRET=1"
        )


def _forward_impl(x, params) -> torch.Tensor:
    fmt = _memory_format(x)
    x = x.contiguous(memory_format=fmt)
    y = torch.empty_like(x, memory_format=fmt)
    if y.numel():
        _check_launchable(x)
        _launch(False, (x, y), x, fmt, params)
    return y


def _backward_impl(grad, x, params) -> torch.Tensor:
    fmt = _memory_format(x)
    x = x.contiguous(memory_format=fmt)
    grad = grad.to(x.dtype).contiguous(memory_format=fmt)
    dx = torch.empty_like(x, memory_format=fmt)
    if dx.numel():
        _check_launchable(x)
        _launch(True, (x, grad, dx), x, fmt, params)
    return dx


# --------------------------------------------------------------------------------------------
# Custom ops (opaque to torch.compile) and autograd.
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("alexnet::lrn_forward", mutates_args=())
def _lrn_forward_op(
    x: torch.Tensor, size: int, alpha_per_sum: float, beta: float, k: float, groups: int
) -> torch.Tensor:
    return _forward_impl(x, (size, alpha_per_sum, beta, k, groups))


@_lrn_forward_op.register_fake
def _lrn_forward_fake(x, size, alpha_per_sum, beta, k, groups):
    return torch.empty_like(x, memory_format=_memory_format(x))


@torch.library.custom_op("alexnet::lrn_backward", mutates_args=())
def _lrn_backward_op(
    grad: torch.Tensor,
    x: torch.Tensor,
    size: int,
    alpha_per_sum: float,
    beta: float,
    k: float,
    groups: int,
) -> torch.Tensor:
    return _backward_impl(grad, x, (size, alpha_per_sum, beta, k, groups))


@_lrn_backward_op.register_fake
def _lrn_backward_fake(grad, x, size, alpha_per_sum, beta, k, groups):
    return torch.empty_like(x, memory_format=_memory_format(x))


def _setup_context(ctx, inputs, output) -> None:
    x, *params = inputs
    ctx.save_for_backward(x)
    ctx.params = params


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return (_lrn_backward_op(grad, x, *ctx.params), *(None,) * len(ctx.params))


_lrn_forward_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


def fused_lrn_available(x: torch.Tensor) -> bool:
    """True when triton is importable and x is on CUDA or Triton's interpreter is on."""
    return triton is not None and (x.is_cuda or _interpreting())


def lrn_triton(
    x: torch.Tensor,
    size: int = 5,
    alpha_per_sum: float = 1e-4,
    beta: float = 0.75,
    k: float = 2.0,
    groups: int = 1,
) -> torch.Tensor:
    """LRN of a 4-D (N, C, H, W) tensor with the fused Triton kernels; differentiable.

    ``alpha_per_sum`` multiplies the plain sum of squares over the window (see
    ``LocalResponseNorm.alpha_per_sum``); with ``groups > 1`` windows stop at the boundaries of
    the ``groups`` channel blocks. Returns a tensor of x's dtype and memory format (NCHW or
    channels_last; other strides come back NCHW). Autograd runs the fused backward (the op's
    registered autograd formula, torch.library's form of an autograd.Function); no double
    backward. Runs on CUDA tensors, or on CPU under TRITON_INTERPRET=1.
    """
    if x.dim() != 4:
        raise ValueError(f"lrn_triton expects a 4-D (N, C, H, W) tensor, got {x.dim()}-D")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"lrn_triton supports float32, bfloat16 and float16, not {x.dtype}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"groups={groups} must be >= 1 and divide the {x.shape[1]} channels")
    return _lrn_forward_op(x, int(size), float(alpha_per_sum), float(beta), float(k), int(groups))


class FusedLocalResponseNorm(LocalResponseNorm):
    """``LocalResponseNorm`` that runs the fused Triton kernels when it can.

    Same arguments, same (empty) state_dict. Uses :func:`lrn_triton` for 4-D float32/bf16/fp16
    inputs when :func:`fused_lrn_available` (CUDA, or CPU under TRITON_INTERPRET=1); otherwise
    the parent's torch implementation. Under torch.compile that choice is made once, at trace
    time.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.dtype in SUPPORTED_DTYPES and fused_lrn_available(x):
            groups = getattr(self, "groups", 1)
            return lrn_triton(x, self.size, self.alpha_per_sum, self.beta, self.k, groups)
        return super().forward(x)


__all__ = [
    "FusedLocalResponseNorm",
    "SUPPORTED_DTYPES",
    "fused_lrn_available",
    "lrn_triton",
]
