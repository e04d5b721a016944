"""The fused LRN kernels against the paper's formula (alexnet.models.lrn.lrn_reference).

The Triton kernels run on CPU tensors under Triton's interpreter: the ``interpret`` fixture
(tests/conftest.py) sets TRITON_INTERPRET=1 for one test. Triton reads that variable when
``triton.jit`` wraps a function, and alexnet.kernels.lrn wraps its kernels lazily per interpreter
setting, so this works whether or not triton was imported earlier in the session. Tensors are
tiny because the interpreter is slow.
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from alexnet.bench.lrn import bench_lrn
from alexnet.kernels import lrn as klrn
from alexnet.kernels.lrn import (
    FusedLocalResponseNorm,
    fused_lrn_available,
    lrn_triton,
)
from alexnet.models.lrn import LocalResponseNorm, lrn_reference
from conftest import HAS_TRITON

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
CL = torch.channels_last


def _input(shape, channels_last, dtype=torch.float32, scale=10.0, seed=0):
    # scale 10: s * sum(a^2) is a few % of k, so a wrong window shows far above fp32 noise.
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * scale).to(dtype)
    return x.contiguous(memory_format=CL if channels_last else torch.contiguous_format)


def _fused_and_grad(x, g, **params):
    x = x.detach().requires_grad_(True)
    y = lrn_triton(x, **params)
    (dx,) = torch.autograd.grad(y, x, g)
    return y, dx


def _expected(fn, x, g):
    """fn's output and input-gradient, computed in float64."""
    x64 = x.detach().double().requires_grad_(True)
    y64 = fn(x64)
    (dx64,) = torch.autograd.grad(y64, x64, g.double())
    return y64, dx64


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("channels", [3, 5, 7, 96])
@pytest.mark.parametrize("convention", ["paper", "torch"])
def test_matches_paper_formula(interpret, convention, channels, channels_last):
    """Forward and input-gradient equal the formula, C below/at/above the window, both layouts."""
    mod = LocalResponseNorm(convention=convention)  # size 5, alpha 1e-4, beta 0.75, k 2
    params = dict(size=mod.size, alpha_per_sum=mod.alpha_per_sum, beta=mod.beta, k=mod.k)
    x = _input((2, channels, 3, 4), channels_last)
    g = _input(x.shape, channels_last, scale=1.0, seed=1)

    y, dx = _fused_and_grad(x, g, **params)
    y64, dx64 = _expected(
        lambda a: lrn_reference(a, mod.size, mod.alpha_per_sum, mod.beta, mod.k), x, g
    )

    fmt = CL if channels_last else torch.contiguous_format
    assert y.dtype == dx.dtype == torch.float32
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx.double(), dx64, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize(
    "size,alpha,beta,k",
    [
        (1, 0.1, 0.75, 2.0),
        (2, 0.05, 0.5, 1.0),
        (3, 0.05, 0.5, 1.0),
        (4, 1e-3, 0.75, 2.0),
        (7, 0.02, 1.0, 0.5),
    ],
)
def test_other_hyperparameters_match_torch(interpret, size, alpha, beta, k):
    """Other sizes/alpha/beta/k against torch's LRN; even sizes (which the module refuses) use
    torch's asymmetric window [c - size//2, c + (size-1)//2]."""
    x = _input((2, 6, 3, 3), channels_last=True, scale=3.0)
    g = _input(x.shape, channels_last=False, scale=1.0, seed=1)  # gradient in the other layout

    y, dx = _fused_and_grad(x, g, size=size, alpha_per_sum=alpha, beta=beta, k=k)
    y64, dx64 = _expected(lambda a: F.local_response_norm(a, size, alpha * size, beta, k), x, g)

    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx.double(), dx64, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("channels,groups", [(8, 2), (96, 2), (9, 3), (4, 4)])
def test_groups_keep_windows_inside_each_tower(interpret, channels, groups, channels_last):
    """groups=2 is the paper's two towers: the formula applied to each half on its own."""
    mod = LocalResponseNorm(convention="paper", groups=groups)
    x = _input((2, channels, 3, 2), channels_last)
    g = _input(x.shape, channels_last, scale=1.0, seed=1)

    def per_group(a):
        return torch.cat(
            [lrn_reference(part, 5, 1e-4, 0.75, 2.0) for part in a.chunk(groups, 1)], 1
        )

    y, dx = _fused_and_grad(x, g, size=5, alpha_per_sum=1e-4, beta=0.75, k=2.0, groups=groups)
    y64, dx64 = _expected(per_group, x, g)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx.double(), dx64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(FusedLocalResponseNorm(groups=groups)(x), mod(x))


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 40, 3, 5), (1, 96, 3, 3)])
def test_many_tiles_with_partial_edges(interpret, monkeypatch, shape, channels_last):
    """Tiny tiles force a grid of many pixel and channel blocks, the last ones partial."""
    monkeypatch.setattr(klrn, "_FWD_TILE", 64)
    monkeypatch.setattr(klrn, "_BWD_TILE", 32)
    fmt = CL if channels_last else torch.contiguous_format
    block_p, block_c = klrn._blocks(shape[1], fmt, 32)
    assert shape[2] * shape[3] > block_p  # (and C > BLOCK_C except for 40 in channels_last)
    x = _input(shape, channels_last)
    g = _input(shape, channels_last, scale=1.0, seed=1)

    y, dx = _fused_and_grad(x, g, size=5, alpha_per_sum=1e-4, beta=0.75, k=2.0, groups=2)
    y64, dx64 = _expected(lambda a: LocalResponseNorm(groups=2)(a), x, g)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx.double(), dx64, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(interpret, dtype):
    """bf16/fp16 in and out, fp32 inside: within the output dtype's rounding of the formula."""
    x = _input((2, 96, 3, 3), channels_last=True, dtype=dtype)
    g = _input(x.shape, channels_last=True, dtype=dtype, scale=1.0, seed=1)

    y, dx = _fused_and_grad(x, g, size=5, alpha_per_sum=1e-4, beta=0.75, k=2.0)
    y64, dx64 = _expected(lambda a: lrn_reference(a, 5, 1e-4, 0.75, 2.0), x, g)

    assert y.dtype == dx.dtype == dtype
    # The kernel's error is just the final rounding: compare with the rounded fp64 result.
    torch.testing.assert_close(y, y64.to(dtype), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(dx, dx64.to(dtype), rtol=1e-2, atol=1e-3)
    assert (y.double() - y64).abs().max() <= 2**-7 * y64.abs().max()


@needs_triton
def test_other_strides_are_copied_to_nchw(interpret):
    """Non-dense inputs (slices, permutes) and expanded gradients work; output comes back NCHW."""
    base = _input((2, 14, 4, 6), channels_last=False)
    x = base[:, ::2, :, ::2]  # strided in C and W
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=CL)
    x = x.detach().requires_grad_(True)

    y = lrn_triton(x, 5, 1e-4, 0.75, 2.0)
    y.sum().backward()  # upstream gradient: an expanded (stride 0) tensor of ones

    y64, dx64 = _expected(lambda a: lrn_reference(a, 5, 1e-4, 0.75, 2.0), x, torch.ones_like(x))
    assert y.is_contiguous()
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), dx64, rtol=1e-5, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("shape", [(2, 7, 1, 1), (1, 1, 2, 3), (0, 4, 2, 2)])
def test_degenerate_shapes(interpret, shape):
    """1x1 images (NCHW and channels_last at once), one channel, an empty batch."""
    x = _input(shape, channels_last=True)
    g = torch.ones(shape)
    y, dx = _fused_and_grad(x, g, size=5, alpha_per_sum=1e-4, beta=0.75, k=2.0)
    y64, dx64 = _expected(lambda a: lrn_reference(a, 5, 1e-4, 0.75, 2.0), x, g)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx.double(), dx64, rtol=1e-5, atol=1e-5)


def test_rejects_what_it_cannot_run(no_interpret):
    with pytest.raises(ValueError, match="4-D"):
        lrn_triton(torch.randn(2, 5, 3))
    with pytest.raises(TypeError, match="float32"):
        lrn_triton(torch.randn(1, 5, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="groups"):
        lrn_triton(torch.randn(1, 5, 2, 2), groups=2)
    if HAS_TRITON:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            lrn_triton(torch.randn(1, 5, 2, 2))


@pytest.mark.parametrize("convention", ["paper", "torch"])
def test_fused_module_falls_back_on_cpu(no_interpret, monkeypatch, convention):
    """Without CUDA or the interpreter the module is the parent, bit for bit, and never calls
    the kernels; its constructor, repr and (empty) state_dict are the parent's."""

    def boom(*args, **kwargs):
        raise AssertionError("the fused kernel must not run here")

    monkeypatch.setattr(klrn, "lrn_triton", boom)
    kwargs = dict(size=5, alpha=1e-4, beta=0.75, k=2.0, convention=convention)
    fused, plain = FusedLocalResponseNorm(**kwargs), LocalResponseNorm(**kwargs)
    x = _input((2, 8, 3, 3), channels_last=True)

    assert not fused_lrn_available(x)
    assert torch.equal(fused(x), plain(x))
    assert fused.alpha_per_sum == plain.alpha_per_sum
    assert fused.extra_repr() == plain.extra_repr()
    assert fused.state_dict() == plain.state_dict() == {}
    fused.load_state_dict(plain.state_dict())


@needs_triton
def test_fused_module_uses_kernel_under_interpreter(interpret, monkeypatch):
    calls = []
    real = klrn.lrn_triton
    monkeypatch.setattr(klrn, "lrn_triton", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    mod = FusedLocalResponseNorm(convention="torch")
    x = _input((2, 8, 3, 3), channels_last=True)

    assert fused_lrn_available(x)
    torch.testing.assert_close(mod(x), LocalResponseNorm(convention="torch")(x))
    assert len(calls) == 1
    mod(x.double())  # float64 is not a kernel dtype: falls back
    mod(x[:, :, 0])  # neither is 3-D input
    assert len(calls) == 1


@needs_triton
def test_custom_ops_pass_opcheck(interpret):
    """Schema, fake (meta) implementation and autograd registration, as torch.compile needs."""
    x = _input((2, 7, 3, 3), channels_last=True).requires_grad_(True)
    g = _input(x.shape, channels_last=False, scale=1.0, seed=1)
    ops = torch.ops.alexnet
    torch.library.opcheck(ops.lrn_forward.default, (x, 5, 1e-4, 0.75, 2.0, 1))
    torch.library.opcheck(ops.lrn_backward.default, (g, x.detach(), 5, 1e-4, 0.75, 2.0, 1))


def _compile_check(device="cpu", dtype=torch.float32, backend="aot_eager"):
    """A conv -> ReLU -> FusedLRN block compiled with fullgraph (no graph breaks) equals eager."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), FusedLocalResponseNorm(alpha=1e-2))
    model = model.to(device=device, dtype=dtype, memory_format=CL)
    x = torch.randn(2, 3, 9, 9, device=device, dtype=dtype).contiguous(memory_format=CL)
    compiled = torch.compile(model, fullgraph=True, backend=backend)

    y = compiled(x)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y_ref = model(x)
    y_ref.square().sum().backward()

    # bf16: inductor may pick other conv kernels than eager; the LRN op is the same in both.
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(y, y_ref, **tol)
    for got, want in zip(grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, **tol)


def test_torch_compile_with_fallback(no_interpret):
    _compile_check()


@needs_triton
def test_torch_compile_with_custom_op(interpret):
    _compile_check()


@pytest.mark.slow
def test_torch_compile_inductor_with_fallback(no_interpret):
    _compile_check(backend="inductor")  # ~20 s of C++ compilation on a cold cache


def _compile_for_gpu(kernel, fmt, dtype, arch, shape=(256, 96, 55, 55)):
    """triton.compile the kernel as a launch at `shape` would specialise it, for sm_<arch>."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    n, c, h, w = shape
    backward = kernel is klrn._lrn_bwd_kernel
    block_p, block_c = klrn._blocks(c, fmt, klrn._BWD_TILE if backward else klrn._FWD_TILE)
    stride_n, stride_c, stride_s = klrn._strides(torch.empty(0, c, h, w), fmt)
    ints = {"C": c, "CG": c, "HW": h * w, "stride_n": stride_n, "stride_c": stride_c}
    ints["stride_s"] = stride_s
    const = {"SIZE": 5, "BLOCK_P": block_p, "BLOCK_C": block_c}
    const.update({name: 1 for name, value in ints.items() if value == 1})
    names = [p.name for p in triton.jit(kernel).params]
    sig, attrs = {}, {}
    for i, name in enumerate(names):
        if name in const:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name], attrs[(i,)] = f"*{dtype}", [["tt.divisibility", 16]]
        elif name in ints:
            sig[name] = "i32"
            aligned = name not in klrn._NO_ALIGN_CHANNELS_LAST or fmt != CL
            if aligned and ints[name] % 16 == 0:  # what the JIT's specialisation would add
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32"
    constexprs = {(names.index(name),): value for name, value in const.items()}
    src = ASTSource(triton.jit(kernel), sig, constexprs, attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4})


@needs_triton
@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_nvidia_gpus(monkeypatch, tmp_path, arch):
    """Compile both kernels to cubin for sm_80/sm_90 without a GPU: the interpreter accepts code
    the real Triton compiler rejects, so this guards the GPU path on CPU-only CI."""
    pytest.importorskip("triton.backends.compiler")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # really compile, not a cache hit
    for kernel in (klrn._lrn_fwd_kernel, klrn._lrn_bwd_kernel):
        for fmt in (CL, torch.contiguous_format):
            for dtype in ("bf16", "fp32"):
                assert _compile_for_gpu(kernel, fmt, dtype, arch).asm["cubin"]


def test_bench_lrn_on_cpu(no_interpret):
    result = bench_lrn((2, 8, 3, 3), torch.float32, True, "cpu", compiled=False, warmup=1, iters=2)
    assert result["eager_ms"] > 0
    assert result["compiled_ms"] is None and result["fused_ms"] is None
    assert result["errors"] == {}
    assert result["bytes_fwd_bwd"] == 5 * 2 * 8 * 3 * 3 * 4


@needs_triton
def test_bench_lrn_runs_fused_under_interpreter(interpret):
    result = bench_lrn((1, 8, 2, 2), torch.float32, False, "cpu", compiled=False, warmup=0, iters=1)
    assert result["fused_ms"] > 0
    assert result["fused_max_abs_err"] < 1e-4


# --------------------------------------------------------------------------------------------
# GPU: the compiled kernels at conv1's size (256 x 96 x 55 x 55).
# --------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize(
    "dtype,channels_last",
    [(torch.bfloat16, True), (torch.float32, True), (torch.float32, False), (torch.float16, False)],
)
@pytest.mark.parametrize("convention", ["paper", "torch"])
def test_gpu_conv1_size(convention, dtype, channels_last):
    mod = LocalResponseNorm(convention=convention)
    fmt = CL if channels_last else torch.contiguous_format
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(256, 96, 55, 55, device="cuda", generator=gen) * 10).to(dtype)
    x = x.contiguous(memory_format=fmt)
    g = torch.randn(x.shape, device="cuda", generator=gen).to(dtype).contiguous(memory_format=fmt)

    y, dx = _fused_and_grad(x, g, size=5, alpha_per_sum=mod.alpha_per_sum, beta=0.75, k=2.0)
    # Reference: torch's implementation in fp32 (checked against the formula above) on the same
    # (rounded) inputs.
    xr = x.detach().float().requires_grad_(True)
    yr = mod(xr)
    (dxr,) = torch.autograd.grad(yr, xr, g.float())

    assert y.dtype == dx.dtype == dtype
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y.float(), yr.to(dtype).float(), **tol)
    torch.testing.assert_close(dx.float(), dxr.to(dtype).float(), **tol)


@pytest.mark.gpu
@needs_cuda
@needs_triton
def test_gpu_torch_compile_inductor():
    """The custom op inside an inductor-compiled bf16 channels_last block (no graph break)."""
    _compile_check(device="cuda", dtype=torch.bfloat16, backend="inductor")


@pytest.mark.gpu
@needs_cuda
@needs_triton
def test_gpu_bench_lrn_reports_all_three():
    result = bench_lrn(warmup=2, iters=5)
    assert result["eager_ms"] > 0 and result["compiled_ms"] > 0 and result["fused_ms"] > 0
    assert result["errors"] == {}
    # bf16 output rounding of values up to ~4: a few 1e-2 at most; eager bf16 is no better.
    assert result["fused_max_abs_err"] < 0.1
