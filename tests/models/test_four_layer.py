"""The four-layer CIFAR-10 CNN (cuda-convnet's layers-18pct): layers, maps, knobs, init."""

import pytest
import torch
from torch import nn

from alexnet.models import MODELS, FourLayerCNN, LocalResponseNorm, build_model, num_parameters
from alexnet.models.four_layer import PAPER_INIT_STD


def test_layers_and_map_sizes_follow_layers_18pct():
    model = FourLayerCNN()
    assert [m.out_channels for m in (model.conv1, model.conv2, model.conv3)] == [32, 32, 64]
    assert all(
        m.kernel_size == (5, 5) and m.padding == (2, 2)
        for m in (model.conv1, model.conv2, model.conv3)
    )
    assert isinstance(model.pool1, nn.MaxPool2d)
    assert isinstance(model.pool2, nn.AvgPool2d) and isinstance(model.pool3, nn.AvgPool2d)
    x = torch.randn(3, 3, 32, 32)
    # windows of 3, stride 2, starting at 0 and allowed to hang over: 32 -> 16 -> 8 -> 4
    after_pool1 = model.pool1(model.conv1(x))
    assert after_pool1.shape == (3, 32, 16, 16)
    assert model.features(x).shape == (3, 64, 4, 4)
    assert model.embed(x).shape == (3, 1024)
    assert model(x).shape == (3, 10)
    # conv 2,432 + 25,632 + 51,264 weights and biases, fc 10,250
    assert num_parameters(model) == 89_578


def test_average_pool_divides_by_pixels_inside_the_image():
    # cuda-convnet averages over the part of the window inside the image: a constant map stays
    # constant, including the last (clipped) window
    pooled = FourLayerCNN().pool2(torch.ones(1, 1, 16, 16))
    assert pooled.shape == (1, 1, 8, 8)
    assert torch.allclose(pooled, torch.ones_like(pooled))


def test_lrn_knob_uses_the_paper_normalisation_after_pooling():
    with_lrn, without = FourLayerCNN(lrn=True), FourLayerCNN(lrn=False)
    assert isinstance(with_lrn.norm1, LocalResponseNorm) and isinstance(
        with_lrn.norm2, LocalResponseNorm
    )
    norm = with_lrn.norm1
    assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 1e-4, 0.75, 2.0)
    assert isinstance(without.norm1, nn.Identity) and isinstance(without.norm2, nn.Identity)
    # same parameter names with and without LRN: checkpoints line up
    assert [n for n, _ in with_lrn.named_parameters()] == [n for n, _ in without.named_parameters()]
    torch.manual_seed(0)
    without.load_state_dict(with_lrn.state_dict())
    x = torch.randn(2, 3, 32, 32) * 60
    assert not torch.allclose(with_lrn(x), without(x))


def test_activation_knob():
    assert isinstance(FourLayerCNN(activation="tanh").act, nn.Tanh)
    assert isinstance(FourLayerCNN().act, nn.ReLU)
    x = torch.randn(2, 3, 32, 32)
    model = FourLayerCNN(activation="tanh")
    assert model.features(x).abs().max() <= 1.0  # averages of tanh outputs


def test_paper_init_uses_cuda_convnet_stds_and_zero_biases():
    torch.manual_seed(0)
    model = FourLayerCNN(init="paper")
    for name, std in PAPER_INIT_STD.items():
        layer = getattr(model, name)
        assert layer.weight.std().item() == pytest.approx(std, rel=0.15)
        assert torch.all(layer.bias == 0)
    kaiming = FourLayerCNN(init="kaiming")
    # fan_in of conv2 is 32*5*5 = 800: std sqrt(2/800)
    assert kaiming.conv2.weight.std().item() == pytest.approx((2 / 800) ** 0.5, rel=0.1)


@pytest.mark.parametrize(
    "knob,value", [("activation", "sigmoid"), ("init", "xavier"), ("lrn_convention", "caffe")]
)
def test_bad_knob_names_itself(knob, value):
    with pytest.raises(ValueError, match=rf"{knob}={value!r} is unknown"):
        FourLayerCNN(**{knob: value})


def test_registered_and_trains_a_step():
    assert MODELS["four_layer"] is FourLayerCNN
    model = build_model("four_layer", num_classes=3, lrn=False, activation="tanh")
    assert model.fc4.out_features == 3
    x, y = torch.randn(8, 3, 32, 32) * 50, torch.randint(0, 3, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
