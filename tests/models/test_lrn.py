"""LocalResponseNorm against a direct implementation of the paper's formula (section 3.3)."""

import pytest
import torch
from torch import nn

from alexnet.models.lrn import LocalResponseNorm, lrn_reference


def post_relu_maps(channels: int, scale: float = 30.0, dtype=torch.float64) -> torch.Tensor:
    """Non-negative maps large enough that alpha * sum(a^2) is comparable to k=2.

    With alpha=1e-4 and five channels of ~30, alpha * sum ~ 0.5: the normalisation bites, as it
    does on conv1's outputs in a trained net.
    """
    gen = torch.Generator().manual_seed(channels)
    return torch.relu(torch.randn(2, channels, 4, 4, generator=gen, dtype=dtype)) * scale


@pytest.mark.parametrize("channels", [1, 3, 5, 8, 96])
@pytest.mark.parametrize("scale", [1.0, 30.0, 200.0])
def test_paper_convention_matches_formula(channels, scale):
    a = post_relu_maps(channels, scale)
    out = LocalResponseNorm(convention="paper")(a)
    torch.testing.assert_close(out, lrn_reference(a, size=5, alpha=1e-4, beta=0.75, k=2.0))


@pytest.mark.parametrize("channels", [1, 3, 5, 8, 96])
def test_torch_convention_divides_alpha_by_size(channels):
    a = post_relu_maps(channels)
    out = LocalResponseNorm(alpha=1e-4, convention="torch")(a)
    torch.testing.assert_close(out, lrn_reference(a, size=5, alpha=1e-4 / 5, beta=0.75, k=2.0))


@pytest.mark.parametrize("size", [1, 3, 7])
def test_other_odd_window_sizes_match_formula(size):
    a = post_relu_maps(10)
    out = LocalResponseNorm(size=size, alpha=1e-3)(a)
    torch.testing.assert_close(out, lrn_reference(a, size=size, alpha=1e-3, beta=0.75, k=2.0))


def test_normalisation_is_not_a_no_op_at_these_magnitudes():
    # Guards the tests above: at scale 30 the denominator must differ from k^beta noticeably.
    a = post_relu_maps(96)
    ratio = LocalResponseNorm()(a)[a > 0] / (a[a > 0] / 2.0**0.75)
    assert ratio.min() < 0.9


def test_paper_alpha_equals_torch_module_with_alpha_times_size():
    a = post_relu_maps(96, dtype=torch.float32)
    ours = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0, convention="paper")(a)
    theirs = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(a)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_torch_convention_equals_torch_module():
    a = post_relu_maps(96, dtype=torch.float32)
    ours = LocalResponseNorm(alpha=1e-4, convention="torch")(a)
    torch.testing.assert_close(ours, nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a))


def test_alpha_per_sum():
    assert LocalResponseNorm(alpha=1e-4, convention="paper").alpha_per_sum == 1e-4
    assert LocalResponseNorm(alpha=1e-4, convention="torch").alpha_per_sum == pytest.approx(2e-5)


@pytest.mark.parametrize("convention", ["paper", "torch"])
@pytest.mark.parametrize("alpha", [1e-4, 0.1])
def test_gradcheck(convention, alpha):
    # alpha=0.1 makes the denominator's gradient large enough to be checked meaningfully.
    a = torch.randn(1, 6, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = (a * 3).requires_grad_()
    lrn = LocalResponseNorm(alpha=alpha, convention=convention)
    assert torch.autograd.gradcheck(lrn, (a,))


def test_unknown_convention_raises():
    with pytest.raises(ValueError, match="lrn_convention='caffe'"):
        LocalResponseNorm(convention="caffe")


@pytest.mark.parametrize("size", [0, 4])
def test_even_or_empty_window_raises(size):
    with pytest.raises(ValueError, match="size"):
        LocalResponseNorm(size=size)


def test_extra_repr_names_convention():
    assert "convention='torch'" in repr(LocalResponseNorm(convention="torch"))


def test_grouped_lrn_normalises_each_tower_on_its_own():
    torch.manual_seed(0)
    a = torch.randn(2, 12, 3, 3) * 40
    lrn = LocalResponseNorm(groups=2)
    expected = torch.cat([lrn_reference(a[:, :6]), lrn_reference(a[:, 6:])], dim=1)
    assert torch.allclose(lrn(a), expected, atol=1e-5)
    # the window stops at the boundary: channel 5 no longer sees channels 6 and 7
    assert not torch.allclose(lrn(a)[:, 5], lrn_reference(a)[:, 5])
    channels_last = a.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(lrn(channels_last), expected, atol=1e-5)


def test_two_tower_alexnet_uses_per_tower_lrn():
    from alexnet.models import AlexNet, AlexNetCifar

    assert AlexNetCifar(towers=2).norm1.groups == 2
    assert AlexNetCifar(towers=1).norm2.groups == 1
    assert AlexNet(towers=2).norm2.groups == 2


# ---- the banded implementation's own derivative ---------------------------------------------


def _grad(fn, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    a = a.detach().requires_grad_()
    (grad,) = torch.autograd.grad(fn(a), a, g)
    return grad


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_equals_autograd_through_the_formula(groups, channels_last):
    a = post_relu_maps(12) - 10.0  # negative values too: the sign of a matters in the gradient
    g = torch.randn(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(1))
    if channels_last:
        a, g = (t.contiguous(memory_format=torch.channels_last) for t in (a, g))
    lrn = LocalResponseNorm(groups=groups)
    per_group = a.shape[1] // groups

    def reference(t):
        return torch.cat(
            [lrn_reference(t[:, i * per_group : (i + 1) * per_group]) for i in range(groups)], dim=1
        )

    torch.testing.assert_close(lrn(a), reference(a))
    torch.testing.assert_close(_grad(lrn, a, g), _grad(reference, a, g))


def test_bf16_autocast_keeps_the_normalisation_in_fp32():
    a = post_relu_maps(32, dtype=torch.float32)
    lrn = LocalResponseNorm()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = lrn(a)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, lrn(a), rtol=0, atol=0)


def test_bf16_input_is_normalised_in_fp32_and_returned_in_bf16():
    a = post_relu_maps(32, dtype=torch.float32).bfloat16()
    out = LocalResponseNorm()(a)
    assert out.dtype == torch.bfloat16
    # One rounding to bf16 of the fp32 result: within bf16's half-ulp (2^-9 relative).
    torch.testing.assert_close(out.float(), lrn_reference(a.float()), rtol=2**-8, atol=1e-6)


def test_compiled_lrn_under_autocast_matches_eager_and_leaves_autocast_on():
    # Inside torch.compile the plain formula runs; the layer after it must still autocast.
    net = nn.Sequential(nn.Conv2d(3, 8, 3), LocalResponseNorm(groups=2), nn.Conv2d(8, 4, 3))
    x = torch.randn(2, 3, 8, 8) * 30
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager, compiled = net(x), torch.compile(net, backend="aot_eager")(x)
    assert compiled.dtype == eager.dtype == torch.bfloat16
    torch.testing.assert_close(compiled.float(), eager.float(), rtol=2**-7, atol=1e-2)
