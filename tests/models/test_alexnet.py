"""The networks of section 3: shapes, parameter counts, init, towers, knobs, registry.

The 224px nets have ~61M parameters and take about a second to build on CPU, so the knob grid
builds them on the ``meta`` device (shapes only, no memory, no arithmetic) and only a few tests
build real ones, once per module.
"""

import inspect
import itertools

import pytest
import torch
from torch import nn

from alexnet.models import (
    MODELS,
    AlexNet,
    AlexNetCifar,
    AlexNetTV,
    LocalResponseNorm,
    build_model,
    num_parameters,
)

GRID = list(itertools.product([True, False], ["overlap", "nonoverlap"], [1, 2], ["relu", "tanh"]))
GRID_IDS = [f"lrn={lrn}-{pool}-towers{t}-{act}" for lrn, pool, t, act in GRID]
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def on_meta(cls, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cls(**kwargs)


def image_batch(model: nn.Module, n: int = 2, device: str = "cpu") -> torch.Tensor:
    return torch.randn(n, 3, model.input_size, model.input_size, device=device)


@pytest.fixture(scope="module")
def paper_net() -> AlexNet:
    torch.manual_seed(0)
    return AlexNet().eval()


# ---- parameter counts, by hand from the layer sizes ----------------------------------------


def conv_params(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k + c_out


def fc_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def paper_count(towers: int, classes: int = 1000) -> int:
    t = towers
    convs = (
        conv_params(3, 96, 11)
        + conv_params(96, 256, 5, t)
        + conv_params(256, 384, 3)
        + conv_params(384, 384, 3, t)
        + conv_params(384, 256, 3, t)
    )
    return convs + fc_params(9216, 4096) + fc_params(4096, 4096) + fc_params(4096, classes)


def cifar_count(towers: int, classes: int = 10) -> int:
    t = towers
    convs = (
        conv_params(3, 64, 5)
        + conv_params(64, 192, 5, t)
        + conv_params(192, 384, 3)
        + conv_params(384, 384, 3, t)
        + conv_params(384, 256, 3, t)
    )
    return convs + fc_params(256 * 4 * 4, 2048) + fc_params(2048, 2048) + fc_params(2048, classes)


def test_paper_parameter_counts():
    assert paper_count(2) == 60_965_224  # the hand count agrees with the published figure
    assert num_parameters(on_meta(AlexNet)) == 60_965_224
    assert num_parameters(on_meta(AlexNet, towers=1)) == 62_378_344 == paper_count(1)


def test_torchvision_variant_parameter_count():
    assert num_parameters(on_meta(AlexNetTV)) == 61_100_840


@pytest.mark.parametrize("towers", [1, 2])
def test_cifar_parameter_counts_and_pooling_does_not_change_them(towers):
    overlap = num_parameters(AlexNetCifar(towers=towers, pool="overlap"))
    nonoverlap = num_parameters(AlexNetCifar(towers=towers, pool="nonoverlap"))
    assert overlap == nonoverlap == cifar_count(towers)


@pytest.mark.parametrize("kwargs", [{"lrn": False}, {"pool": "nonoverlap"}, {"activation": "tanh"}])
def test_paper_knobs_without_weights_keep_the_count(kwargs):
    assert num_parameters(on_meta(AlexNet, **kwargs)) == 60_965_224


# ---- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("lrn", "pool", "towers", "activation"), GRID, ids=GRID_IDS)
def test_paper_shapes_for_every_knob(lrn, pool, towers, activation):
    model = on_meta(AlexNet, lrn=lrn, pool=pool, towers=towers, activation=activation)
    x = image_batch(model, device="meta")
    assert model(x).shape == (2, 1000)
    assert model.embed(x).shape == (2, 4096)


@pytest.mark.parametrize(("lrn", "pool", "towers", "activation"), GRID, ids=GRID_IDS)
def test_cifar_forward_for_every_knob(lrn, pool, towers, activation):
    model = AlexNetCifar(lrn=lrn, pool=pool, towers=towers, activation=activation).eval()
    x = image_batch(model)
    logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert model.embed(x).shape == (2, 2048)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"lrn": False, "pool": "nonoverlap", "towers": 1, "activation": "tanh"}],
    ids=["paper", "all-flipped"],
)
def test_paper_real_forward(kwargs, paper_net):
    model = paper_net if not kwargs else AlexNet(**kwargs).eval()
    x = image_batch(model, n=1)
    with torch.no_grad():
        logits, features = model(x), model.embed(x)
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert features.shape == (1, 4096)
    torch.testing.assert_close(model.fc8(features), logits)  # embed is fc8's input


def test_torchvision_variant_shapes():
    model = on_meta(AlexNetTV, num_classes=7)
    x = image_batch(model, device="meta")
    assert model(x).shape == (2, 7)
    assert model.embed(x).shape == (2, 4096)


def spatial_sizes(model: nn.Module, names: tuple[str, ...]) -> list[int]:
    """Height of each named layer's output on one forward pass."""
    sizes = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, out.shape[-1])
        )
        for name in names
    ]
    model(image_batch(model, n=1, device=next(model.parameters()).device))
    for hook in hooks:
        hook.remove()
    return [sizes[name] for name in names]


@pytest.mark.parametrize("pool", ["overlap", "nonoverlap"])
def test_paper_map_sizes(pool):
    model = on_meta(AlexNet, pool=pool)
    names = ("conv1", "pool1", "conv2", "pool2", "conv5", "pool5")
    assert spatial_sizes(model, names) == [55, 27, 27, 13, 13, 6]


@pytest.mark.parametrize("pool", ["overlap", "nonoverlap"])
def test_cifar_map_sizes(pool):
    model = on_meta(AlexNetCifar, pool=pool)
    assert spatial_sizes(model, ("conv1", "pool1", "pool2", "pool5")) == [32, 16, 8, 4]


def test_pool_geometry():
    assert on_meta(AlexNet).pool1.kernel_size == 3 and on_meta(AlexNet).pool1.stride == 2
    nonoverlap = on_meta(AlexNet, pool="nonoverlap").pool5
    assert (nonoverlap.kernel_size, nonoverlap.stride) == (2, 2)


# ---- layer structure -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [AlexNet, AlexNetCifar, AlexNetTV])
def test_named_layers(cls):
    model = on_meta(cls)
    for name in LAYERS:
        assert isinstance(getattr(model, name), nn.Conv2d if name.startswith("conv") else nn.Linear)
    assert model.conv1.in_channels == 3


def test_paper_layer_widths(paper_net):
    convs = [getattr(paper_net, f"conv{i}") for i in range(1, 6)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert paper_net.conv1.kernel_size == (11, 11) and paper_net.conv1.stride == (4, 4)
    assert paper_net.conv1.padding == (2, 2)
    assert tuple(paper_net.conv2.weight.shape) == (256, 48, 5, 5)  # "5x5x48" in section 3.5
    assert paper_net.fc6.in_features == 9216


def test_lrn_knob():
    with_lrn = on_meta(AlexNet, lrn_convention="torch")
    assert isinstance(with_lrn.norm1, LocalResponseNorm) and with_lrn.norm2.convention == "torch"
    without = on_meta(AlexNet, lrn=False)
    assert isinstance(without.norm1, nn.Identity) and isinstance(without.norm2, nn.Identity)


def test_activation_knob():
    assert isinstance(on_meta(AlexNet).act, nn.ReLU)
    assert isinstance(on_meta(AlexNetCifar, activation="tanh").act, nn.Tanh)
    assert not any(isinstance(m, nn.ReLU) for m in on_meta(AlexNetTV, activation="tanh").modules())


@pytest.mark.parametrize(
    ("cls", "full", "half"),
    [
        (AlexNet, [96, 256, 384, 384, 256], [48, 128, 192, 192, 256]),
        (AlexNetCifar, [64, 192, 384, 384, 256], [32, 96, 192, 192, 256]),
    ],
)
def test_conv_width_scales_conv1_to_conv4_only(cls, full, half):
    model = on_meta(cls, conv_width=0.5)
    assert [getattr(model, f"conv{i}").out_channels for i in range(1, 6)] == half
    assert model.fc6.in_features == full[4] * model.final_map**2
    assert model.fc6.out_features == on_meta(cls).fc6.out_features
    x = image_batch(model, device="meta")
    assert model(x).shape[1] == model.fc8.out_features


# ---- towers ----------------------------------------------------------------------------------


def input_grad_by_tower(conv: nn.Conv2d) -> tuple[float, float]:
    """|d(second-tower outputs) / d(inputs)| summed over (first-tower, second-tower) inputs."""
    x = torch.randn(1, conv.in_channels, 5, 5, requires_grad=True)
    conv(x)[:, conv.out_channels // 2 :].sum().backward()
    half = conv.in_channels // 2
    return x.grad[:, :half].abs().sum().item(), x.grad[:, half:].abs().sum().item()


@pytest.mark.parametrize("layer", ["conv2", "conv4", "conv5"])
def test_two_towers_block_cross_tower_connections(layer, paper_net):
    for model in (paper_net, AlexNetCifar(towers=2)):
        conv = getattr(model, layer)
        assert conv.groups == 2
        cross, own = input_grad_by_tower(conv)
        assert cross == 0.0 and own > 0.0


def test_conv3_connects_the_towers(paper_net):
    cross, own = input_grad_by_tower(paper_net.conv3)
    assert cross > 0.0 and own > 0.0


@pytest.mark.parametrize("layer", ["conv2", "conv4", "conv5"])
def test_one_tower_is_fully_connected(layer):
    cross, _ = input_grad_by_tower(getattr(AlexNetCifar(towers=1), layer))
    assert cross > 0.0


# ---- init ------------------------------------------------------------------------------------


def test_paper_init(paper_net):
    for name in LAYERS:
        layer = getattr(paper_net, name)
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.03), name
        assert abs(layer.weight.mean().item()) < 5e-4, name
        expected_bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(layer.bias == expected_bias), name


@pytest.mark.parametrize(("activation", "gain"), [("relu", 2**0.5), ("tanh", 5 / 3)])
def test_kaiming_init_uses_fan_in_and_activation_gain(activation, gain):
    torch.manual_seed(0)
    model = AlexNetCifar(init="kaiming", activation=activation)
    for name in LAYERS:
        layer = getattr(model, name)
        fan_in = layer.weight[0].numel()  # per-group input width x kernel area
        layer_gain = 1.0 if name == "fc8" else gain  # fc8 feeds the softmax, no activation
        assert layer.weight.std().item() == pytest.approx(layer_gain / fan_in**0.5, rel=0.05)
        assert torch.all(layer.bias == 0), name


def test_torchvision_variant_defaults_to_kaiming():
    assert inspect.signature(AlexNetTV).parameters["init"].default == "kaiming"


def test_torch_init_keeps_pytorch_defaults():
    torch.manual_seed(0)
    model = AlexNetCifar(init="torch")
    # PyTorch's default: uniform(+-1/sqrt(fan_in)) biases, never the paper's constants.
    assert model.conv2.bias.abs().max() <= 1 / model.conv2.weight[0].numel() ** 0.5
    assert model.conv2.bias.abs().sum() > 0


# ---- knobs and checkpoints -------------------------------------------------------------------


BAD_KNOBS = [
    ("lrn_convention", "caffe"),
    ("pool", "avg"),
    ("towers", 4),
    ("activation", "sigmoid"),
    ("init", "xavier"),
    ("dropout", 1.0),
    ("conv_width", 0.0),
    ("conv_width", 0.01),  # conv1 would get 1 channel: not splittable in two towers
]


@pytest.mark.parametrize("cls", [AlexNet, AlexNetCifar])
@pytest.mark.parametrize(("knob", "value"), BAD_KNOBS, ids=[f"{k}={v}" for k, v in BAD_KNOBS])
def test_bad_knob_raises_naming_the_knob(cls, knob, value):
    with pytest.raises(ValueError, match=knob):
        cls(**{knob: value})


def test_odd_width_with_two_towers_raises():
    with pytest.raises(ValueError, match="conv_width"):
        AlexNetCifar(conv_width=0.51)  # conv1: round(64 * 0.51) = 33 channels


@pytest.mark.parametrize(("knob", "value"), [("activation", "elu"), ("init", "x"), ("dropout", -1)])
def test_torchvision_variant_bad_knob(knob, value):
    with pytest.raises(ValueError, match=knob):
        AlexNetTV(**{knob: value})


def test_torchvision_variant_has_no_paper_knobs():
    with pytest.raises(TypeError):
        AlexNetTV(lrn=False)


def test_paper_and_cifar_nets_share_their_signature():
    paper = inspect.signature(AlexNet).parameters
    cifar = inspect.signature(AlexNetCifar).parameters
    assert list(paper) == list(cifar)
    assert cifar["num_classes"].default == 10 and paper["num_classes"].default == 1000


def test_kwargs_rebuild_the_net_from_a_state_dict():
    hparams = {"lrn": False, "pool": "nonoverlap", "towers": 1, "activation": "tanh"}
    trained = AlexNetCifar(**hparams).eval()
    rebuilt = AlexNetCifar(**hparams).eval()
    rebuilt.load_state_dict(trained.state_dict())
    x = image_batch(trained)
    torch.testing.assert_close(rebuilt(x), trained(x))


def test_dropout_acts_in_train_mode_only():
    model = AlexNetCifar(dropout=0.5)
    x = image_batch(model)
    torch.manual_seed(0)
    assert not torch.equal(model.train().embed(x), model.embed(x))
    assert torch.equal(model.eval().embed(x), model.embed(x))


# ---- registry --------------------------------------------------------------------------------


def test_registry():
    # A subset check: other networks (vgg) register themselves in the same dict.
    expected = {"alexnet": AlexNet, "alexnet_cifar": AlexNetCifar, "alexnet_tv": AlexNetTV}
    assert {name: MODELS[name] for name in expected} == expected
    model = build_model("alexnet_cifar", num_classes=5, towers=1)
    assert isinstance(model, AlexNetCifar)
    assert model.fc8.out_features == 5 and model.conv2.groups == 1
    with torch.device("meta"):
        assert isinstance(build_model("alexnet", lrn=False), AlexNet)


def test_registry_unknown_name():
    with pytest.raises(ValueError, match=r"model.name='vgg16' is unknown.*alexnet_cifar"):
        build_model("vgg16")


def test_init_bias_sets_the_paper_bias_one_layers_only():
    model = AlexNetCifar(init="paper", init_bias=0.1)
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        assert torch.all(getattr(model, name).bias == 0.1)
    for name in ("conv1", "conv3", "fc8"):
        assert torch.all(getattr(model, name).bias == 0.0)
