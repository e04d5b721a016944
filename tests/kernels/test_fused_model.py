"""``lrn_impl="fused"`` inside the network: same outputs, gradients and state_dict as "torch".

The Triton kernels run on CPU under Triton's interpreter (TRITON_INTERPRET=1, set per test);
the net is the CIFAR one at a quarter of its width so the interpreter stays quick.
"""

import pytest
import torch

from alexnet.kernels import lrn as klrn
from alexnet.kernels.lrn import FusedLocalResponseNorm
from alexnet.models import AlexNet, AlexNetCifar, LocalResponseNorm


def _run(model, x, g):
    model.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    y.backward(g)
    return y, x.grad, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(("convention", "conv_impl"), [("paper", "grouped"), ("torch", "masked")])
def test_fused_lrn_net_matches_torch_lrn_net(interpret, monkeypatch, convention, conv_impl):
    # Kaiming init keeps activations O(input), so the LRN term is comparable with k = 2.
    kwargs = dict(dropout=0.0, conv_width=0.25, lrn_convention=convention, init="kaiming")
    torch.manual_seed(0)
    ref = AlexNetCifar(**kwargs)
    fused = AlexNetCifar(**kwargs, lrn_impl="fused", conv_impl=conv_impl)
    fused.load_state_dict(ref.state_dict())  # strict: identical keys
    assert isinstance(fused.norm1, FusedLocalResponseNorm) and fused.norm1.groups == 2
    x = torch.randn(2, 3, 32, 32) * 30
    g = torch.randn(2, 10)

    calls = []
    real = klrn.lrn_triton

    def spy(*args, **kw):
        calls.append(args[0].shape)
        return real(*args, **kw)

    monkeypatch.setattr(klrn, "lrn_triton", spy)
    y, dx, grads = _run(fused, x, g)
    assert len(calls) == 2, "both LRN layers ran the fused kernels"
    y_ref, dx_ref, grads_ref = _run(ref, x, g)
    for got, want in [(y, y_ref), (dx, dx_ref)]:
        assert (got - want).abs().max() / want.abs().max() < 1e-4
    for name in grads_ref:
        scale = grads_ref[name].abs().max().clamp_min(1e-12)
        assert (grads[name] - grads_ref[name]).abs().max() / scale < 1e-3, name


def test_fused_impl_falls_back_to_torch_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    torch.manual_seed(0)
    ref = AlexNetCifar(conv_width=0.25).eval()
    fused = AlexNetCifar(conv_width=0.25, lrn_impl="fused").eval()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 32) * 60
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x))


def test_lrn_impl_knob_keeps_state_dict_and_rejects_unknown():
    with torch.device("meta"):
        torch_net, fused_net = AlexNet(), AlexNet(lrn_impl="fused")
    assert type(torch_net.norm1) is LocalResponseNorm
    assert isinstance(fused_net.norm2, FusedLocalResponseNorm)
    assert torch_net.state_dict().keys() == fused_net.state_dict().keys()
    with pytest.raises(ValueError, match="lrn_impl='cuda'"):
        AlexNetCifar(lrn_impl="cuda")
