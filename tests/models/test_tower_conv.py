"""The fast paths of the tower-split convolutions compute the paper's function exactly.

Every ``conv_impl`` is checked against the plain grouped ``nn.Conv2d`` (outputs, input
gradients, weight and bias gradients), alone and inside the whole network, in float64 so that
only a wrong formula -- not summation order -- can make them differ.
"""

import pytest
import torch
from torch import nn

from alexnet.models import AlexNet, AlexNetCifar, build_model
from alexnet.models.tower_conv import CONV_IMPLS, TowerConv2d, block_diagonal_weight

FAST_IMPLS = [impl for impl in CONV_IMPLS if impl != "grouped"]


def _conv_pair(impl, groups=2, **geometry):
    torch.manual_seed(0)
    ref = nn.Conv2d(8, 12, groups=groups, **geometry).double()
    fast = TowerConv2d(8, 12, groups=groups, impl=impl, **geometry).double()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _grads(module, x, g):
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad()
    y = module(x)
    y.backward(g)
    return y, x.grad, module.weight.grad, module.bias.grad


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("groups", [2, 4])
@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_tower_conv_equals_grouped_conv(impl, groups, channels_last):
    ref, fast = _conv_pair(impl, groups, kernel_size=3, padding=1, stride=2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 8, 9, 7, dtype=torch.float64).contiguous(memory_format=fmt)
    g = torch.randn(3, 12, 5, 4, dtype=torch.float64)
    for got, want in zip(_grads(fast, x, g), _grads(ref, x, g), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_block_diagonal_weight_places_each_tower_on_the_diagonal():
    w = torch.arange(4 * 3 * 1 * 1, dtype=torch.float32).reshape(4, 3, 1, 1) + 1
    dense = block_diagonal_weight(w, groups=2)[:, :, 0, 0]
    assert dense.shape == (4, 6)
    torch.testing.assert_close(dense[:2, :3], w[:2, :, 0, 0])
    torch.testing.assert_close(dense[2:, 3:], w[2:, :, 0, 0])
    assert not dense[:2, 3:].any() and not dense[2:, :3].any()


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_state_dict_is_the_grouped_layers(impl):
    ref, fast = _conv_pair(impl, kernel_size=3)
    assert {k: v.shape for k, v in fast.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert fast.weight.shape == (12, 4, 3, 3)  # per-tower input width, as nn.Conv2d(groups=2)


def test_unknown_impl_names_the_knob():
    with pytest.raises(ValueError, match="conv_impl='dense'"):
        TowerConv2d(4, 4, 3, groups=2, impl="dense")
    with pytest.raises(ValueError, match="conv_impl"):
        build_model("alexnet_cifar", conv_impl="fast")


# ---- the whole network ----------------------------------------------------------------------


def _net_grads(model, x, g):
    model.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    y.backward(g)
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return y, x.grad, grads


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_cifar_net_outputs_and_gradients_match_grouped(impl):
    torch.manual_seed(0)
    ref = AlexNetCifar(dropout=0.0, conv_width=0.25).double()
    fast = AlexNetCifar(dropout=0.0, conv_width=0.25, conv_impl=impl).double()
    fast.load_state_dict(ref.state_dict())  # strict: the keys and shapes are the same
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64) * 50
    g = torch.randn(2, 10, dtype=torch.float64)
    y_ref, dx_ref, grads_ref = _net_grads(ref, x, g)
    y, dx, grads = _net_grads(fast, x, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-10, atol=1e-12)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_paper_net_forward_matches_grouped_in_float32(impl):
    torch.manual_seed(0)
    ref = AlexNet(num_classes=10, dropout=0.0, init="kaiming").eval()
    fast = AlexNet(num_classes=10, dropout=0.0, init="kaiming", conv_impl=impl).eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 224, 224) * 50
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-3)


def test_checkpoint_moves_between_impls_and_keeps_paper_parameter_count():
    with torch.device("meta"):
        nets = [AlexNet(conv_impl=impl) for impl in CONV_IMPLS]
    shapes = [{k: v.shape for k, v in n.state_dict().items()} for n in nets]
    assert shapes[0] == shapes[1] == shapes[2]
    assert all(sum(p.numel() for p in n.parameters()) == 60_965_224 for n in nets)
    assert [n.conv2.impl for n in nets] == list(CONV_IMPLS)
