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
