"""The networks of the paper, section 3, as plain ``nn.Module``s.

Three nets live here, all with the same named layers (``conv1`` .. ``conv5``, ``fc6`` ..
``fc8``), the same ``embed`` (the 4096-d, or 2048-d, last hidden layer) and ``forward``
(the logits):

- :class:`AlexNet`: the paper's net (Figure 2), 224x224 input, two towers by default.
- :class:`AlexNetCifar`: the same design scaled down for 32x32 CIFAR-10 images.
- :class:`AlexNetTV`: torchvision's single-tower 64-192-384-256-256 variant, the "AlexNet" of
  most blog posts and model zoos, for comparison.

Every knob is a plain keyword argument, so a checkpoint's hyper-parameters rebuild the net.

Towers: in the paper each GPU holds half the kernels of every layer, and "the GPUs communicate
only in certain layers" (section 3.2): conv2, conv4 and conv5 see only the maps of their own
tower, conv3 and the fully-connected layers see both. One process expresses that with
``groups=towers`` on conv2/4/5. Tower ``t`` owns channels ``[t*C/towers, (t+1)*C/towers)`` of
each layer; for conv1 (dense, each tower's 48 kernels see all three colour channels) this is a
labelling convention only, the one Figure 3 uses (top 48 kernels: GPU 1). LRN normalises each
tower's maps on their own (``groups=towers``), as each GPU did in cuda-convnet, so its 5-channel
window never spans the tower boundary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from alexnet.models.lrn import CONVENTIONS, LocalResponseNorm
from alexnet.models.tower_conv import CONV_IMPLS, TowerConv2d

POOLS = ("overlap", "nonoverlap")
ACTIVATIONS = ("relu", "tanh")
INITS = ("paper", "kaiming", "torch")
TOWERS = (1, 2)
LRN_IMPLS = ("torch", "functional", "fused")

# Section 5: "We initialized the neuron biases in the second, fourth, and fifth convolutional
# layers, as well as in the fully-connected hidden layers, with the constant 1."
ONE_BIAS_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")


# --------------------------------------------------------------------------------------------
# Knob checking and small layer factories
# --------------------------------------------------------------------------------------------


def _check_choice(knob: str, value: object, allowed: tuple) -> None:
    """Raise ValueError naming ``knob`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{knob}={value!r} is unknown; choose one of {choices}")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be a probability in [0, 1)")


def _check_knobs(
    lrn_convention, pool, towers, activation, dropout, init, conv_width, conv_impl, lrn_impl
) -> None:
    """Reject bad knob values up front, each error naming its knob."""
    _check_choice("lrn_convention", lrn_convention, CONVENTIONS)
    _check_choice("conv_impl", conv_impl, CONV_IMPLS)
    _check_choice("lrn_impl", lrn_impl, LRN_IMPLS)
    _check_choice("pool", pool, POOLS)
    _check_choice("towers", towers, TOWERS)
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("init", init, INITS)
    _check_dropout(dropout)
    if not conv_width > 0:
        raise ValueError(f"conv_width={conv_width!r} must be positive")


def _activation(name: str) -> nn.Module:
    # Not in-place: forward hooks and embed() may keep references to the pre-activation tensors.
    return nn.ReLU() if name == "relu" else nn.Tanh()


def _lrn(enabled: bool, convention: str, towers: int, impl: str) -> nn.Module:
    # Section 3.3's constants; Identity keeps the layer names (norm1, norm2) stable for lrn=False.
    # groups=towers: each GPU normalised only its own maps, so windows stop at the tower boundary.
    if not enabled:
        return nn.Identity()
    args = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0, "convention": convention,
            "groups": towers}
    if impl == "fused":
        # Imported here: alexnet.kernels imports this package, and triton is optional.
        from alexnet.kernels.lrn import FusedLocalResponseNorm

        return FusedLocalResponseNorm(**args)
    return LocalResponseNorm(**args, impl="functional" if impl == "functional" else "banded")


def _scaled_width(layer: str, channels: int, conv_width: float, towers: int) -> int:
    """``channels * conv_width`` rounded, checked to split evenly across the towers."""
    width = round(channels * conv_width)
    if width < towers or width % towers:
        raise ValueError(
            f"conv_width={conv_width!r} gives {layer} {width} channels, "
            f"which towers={towers} cannot split evenly"
        )
    return width


# --------------------------------------------------------------------------------------------
# Initialisation (section 5)
# --------------------------------------------------------------------------------------------


def init_weights(model: nn.Module, scheme: str, activation: str, init_bias: float = 1.0) -> None:
    """Initialise the ``conv*``/``fc*`` layers of ``model`` in place.

    - ``"paper"``: every weight from N(0, 0.01^2); biases ``init_bias`` (the paper's 1) in
      conv2, conv4, conv5, fc6, fc7 and 0 in conv1, conv3, fc8 (section 5). The rule does not
      depend on ``activation``. With 1, training can sit on a flat loss for a long while (Caffe's
      AlexNet used 0.1 for that reason); ``init_bias=0.1`` is the usual remedy.
    - ``"kaiming"``: He et al. normal init with ``mode="fan_in"`` and the gain of
      ``activation`` (``"linear"`` for fc8, which feeds the softmax); biases 0. fan_in keeps
      forward activations at unit scale, and it is the fan torch computes correctly for grouped
      convs (``weight.shape[1]`` is the per-group input width, whereas its fan_out ignores
      groups and would overstate a grouped conv's fan-out by ``towers``).
    - ``"torch"``: leave PyTorch's layer defaults (what ``torchvision.models.alexnet`` gets).
    """
    _check_choice("init", scheme, INITS)
    _init_layers(
        model,
        scheme,
        activation,
        output="fc8",
        paper_std=lambda name: 0.01,
        paper_bias=lambda name: init_bias if name in ONE_BIAS_LAYERS else 0.0,
    )


def _init_layers(
    model: nn.Module,
    scheme: str,
    activation: str,
    output: str,
    paper_std: Callable[[str], float],
    paper_bias: Callable[[str], float],
) -> None:
    """The ``init`` schemes over the ``conv*``/``fc*`` children of ``model``, in order.

    Shared with ``FourLayerCNN``, whose "paper" scheme differs only in its per-layer stds and
    biases: ``"paper"`` draws N(0, ``paper_std(name)``^2) and sets the bias to
    ``paper_bias(name)``; ``"kaiming"`` is fan_in with the gain of ``activation`` (linear for the
    ``output`` layer, which feeds the softmax) and zero biases; ``"torch"`` leaves the defaults.
    """
    if scheme == "torch":
        return
    for name, layer in model.named_children():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "paper":
            nn.init.normal_(layer.weight, mean=0.0, std=paper_std(name))
            nn.init.constant_(layer.bias, paper_bias(name))
        else:
            gain_of = "linear" if name == output else activation
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity=gain_of)
            nn.init.zeros_(layer.bias)


# --------------------------------------------------------------------------------------------
# The classifier both AlexNet variants put on their conv features
# --------------------------------------------------------------------------------------------


class _FCHead(nn.Module):
    """fc6 and fc7 (each after dropout, then the activation) and fc8 on ``features(x)``.

    :class:`AlexNet` and :class:`AlexNetTV` differ only in their conv layers: each builds those
    and ``act``, defines ``features`` and calls :meth:`_add_fc_layers` last.
    """

    act: nn.Module
    hidden: int

    def _add_fc_layers(self, in_features: int, dropout: float, num_classes: int) -> None:
        # Registered after the conv layers, in this order, so that state_dict keys and the
        # default init's random draws come in the same order as when each net built its own.
        self.drop6 = nn.Dropout(dropout)
        self.fc6 = nn.Linear(in_features, self.hidden)
        self.drop7 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(self.hidden, self.hidden)
        self.fc8 = nn.Linear(self.hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer, fc7 after its activation: ``(N, hidden)``.

        Dropout is active in train mode; call under ``model.eval()`` for stable features.
        """
        x = torch.flatten(self.features(x), 1)
        x = self.act(self.fc6(self.drop6(x)))
        x = self.act(self.fc7(self.drop7(x)))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``; the softmax lives in the loss."""
        return self.fc8(self.embed(x))


# --------------------------------------------------------------------------------------------
# The paper's net
# --------------------------------------------------------------------------------------------


class AlexNet(_FCHead):
    """The network of Figure 2: five conv layers, three fully-connected layers.

    Input 224x224 with conv1 padding 2 (torchvision's choice). The paper's "224x224x3" input
    with stride 4 and no padding would give 54x54 maps and break fc6's 9216 inputs; 227 with no
    padding (Caffe's choice) and 224 with padding 2 both give 55 -> 27 -> 13 -> 6, so the
    data pipeline can keep the paper's 224 crops.

    ``forward`` returns logits ``(N, num_classes)``; ``embed`` returns the last hidden layer
    (fc7 after its activation, ``(N, 4096)``), the feature space of the paper's Figure 4.
    With defaults at 1000 classes the net has 60,965,224 parameters (62,378,344 with towers=1).

    Knobs (each the name of one ablation):

    - ``lrn``: local response normalisation after conv1 and conv2 (section 3.3);
      ``lrn_convention`` is ``"paper"`` or ``"torch"`` (see ``alexnet.models.lrn``).
    - ``pool``: ``"overlap"`` = max-pool 3/2 (section 3.4); ``"nonoverlap"`` = 2/2.
    - ``towers``: 2 = the two-GPU connectivity (``groups=2`` on conv2/4/5); 1 = the same widths
      fully connected.
    - ``activation``: ``"relu"`` or ``"tanh"`` wherever the paper has a ReLU (section 3.1).
    - ``dropout``: drop probability before fc6 and fc7 (section 4.2).
    - ``init``: ``"paper"``, ``"kaiming"`` or ``"torch"`` (see :func:`init_weights`).
    - ``init_bias``: the bias of conv2/4/5 and fc6/7 under ``init="paper"`` (paper: 1).
    - ``conv_width``: scales conv1..conv4's kernel counts. 0.5 is the paper's one-GPU net:
      "half of the kernels in each convolutional layer", except that (footnote) the last conv
      layer and the FC layers were not halved, to keep the parameter counts comparable.

    Two knobs change only how the same function is computed (speed, never results; the
    state_dict is the same, so checkpoints move freely between them):

    - ``conv_impl``: ``"grouped"`` (PyTorch's grouped conv), ``"split"`` (one dense conv per
      tower, concatenated) or ``"masked"`` (one dense conv with a block-diagonal weight) for the
      tower-split conv2/4/5; see ``alexnet.models.tower_conv``.
    - ``lrn_impl``: ``"torch"`` (``alexnet.models.lrn``'s band-matrix LRN), ``"functional"``
      (torch's ``F.local_response_norm``, the benchmarks' baseline) or ``"fused"`` (the Triton
      kernels of ``alexnet.kernels.lrn`` on CUDA; the torch code elsewhere).
    """

    input_size = 224

    # Geometry (section 3.5); AlexNetCifar overrides only these class attributes.
    conv_channels = (96, 256, 384, 384, 256)  # kernels in conv1..conv5
    conv1_geometry = {"kernel_size": 11, "stride": 4, "padding": 2}
    pool_geometry = {
        "overlap": {"kernel_size": 3, "stride": 2},  # z=3, s=2: overlapping (section 3.4)
        "nonoverlap": {"kernel_size": 2, "stride": 2},  # s=z=2: the paper's baseline
    }
    final_map = 6  # 55 -> 27 -> 13 -> 6 with either pooling
    hidden = 4096  # fc6, fc7 width

    def __init__(
        self,
        num_classes: int = 1000,
        lrn: bool = True,
        lrn_convention: str = "paper",
        pool: str = "overlap",
        towers: int = 2,
        activation: str = "relu",
        dropout: float = 0.5,
        init: str = "paper",
        conv_width: float = 1.0,
        init_bias: float = 1.0,
        conv_impl: str = "grouped",
        lrn_impl: str = "torch",
    ) -> None:
        super().__init__()
        _check_knobs(
            lrn_convention, pool, towers, activation, dropout, init, conv_width, conv_impl, lrn_impl
        )
        c1, c2, c3, c4 = (
            _scaled_width(f"conv{i}", c, conv_width, towers)
            for i, c in enumerate(self.conv_channels[:4], start=1)
        )
        c5 = self.conv_channels[4]  # never scaled: see the class docstring (footnote)

        self.act = _activation(activation)
        # conv1: 96 kernels 11x11x3, stride 4. Each tower's 48 kernels see all of the image.
        self.conv1 = nn.Conv2d(3, c1, **self.conv1_geometry)
        self.norm1 = _lrn(lrn, lrn_convention, towers, lrn_impl)
        self.pool1 = nn.MaxPool2d(**self.pool_geometry[pool])
        # conv2: 256 kernels 5x5x48, each sees only its own tower's conv1 maps.
        self.conv2 = TowerConv2d(c1, c2, kernel_size=5, padding=2, groups=towers, impl=conv_impl)
        self.norm2 = _lrn(lrn, lrn_convention, towers, lrn_impl)
        self.pool2 = nn.MaxPool2d(**self.pool_geometry[pool])
        # conv3: 384 kernels 3x3x256, connected to both towers (the GPUs communicate here).
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=3, padding=1)
        # conv4 (384 3x3x192) and conv5 (256 3x3x192): back to one tower each.
        self.conv4 = TowerConv2d(c3, c4, kernel_size=3, padding=1, groups=towers, impl=conv_impl)
        self.conv5 = TowerConv2d(c4, c5, kernel_size=3, padding=1, groups=towers, impl=conv_impl)
        self.pool5 = nn.MaxPool2d(**self.pool_geometry[pool])
        # The FC layers see all of the previous layer (both towers).
        self._add_fc_layers(c5 * self.final_map**2, dropout, num_classes)
        init_weights(self, init, activation, init_bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """conv1..pool5: the ``(N, 256, final_map, final_map)`` map the classifier reads."""
        x = self.pool1(self.norm1(self.act(self.conv1(x))))  # normalised after the ReLU
        x = self.pool2(self.norm2(self.act(self.conv2(x))))
        x = self.act(self.conv3(x))  # no pooling or normalisation between conv3, conv4, conv5
        x = self.act(self.conv4(x))
        x = self.pool5(self.act(self.conv5(x)))
        return x


# --------------------------------------------------------------------------------------------
# The same design for 32x32 images
# --------------------------------------------------------------------------------------------


class AlexNetCifar(AlexNet):
    """AlexNet's design scaled for 32x32 CIFAR-10 images; same knobs, layers and ``embed``.

    Layers: conv1 64 5x5 stride 1 -> act -> LRN -> pool; conv2 192 5x5 (groups=towers) -> act
    -> LRN -> pool; conv3 384 3x3 (dense); conv4 384 3x3 and conv5 256 3x3 (groups=towers) ->
    act -> pool; fc6 4096 -> 2048, fc7 2048 -> 2048, fc8 2048 -> num_classes (default 10), with
    dropout before fc6 and fc7. Maps: 32 -> 16 -> 8 -> 4.

    Why these sizes:

    - conv1 is 5x5 with stride 1: a 32px image has no room for an 11x11 stride-4 kernel (it
      would leave 8x8 maps before any pooling).
    - conv3..conv5 keep the paper's 384-384-256 tail; conv1 and conv2 are 2/3 and 3/4 of the
      paper's 96 and 256 (a 5x5x3 kernel has less to describe than an 11x11x3 one), so the
      widths still grow layer by layer in roughly the paper's ratios.
    - fc6/fc7 are 2048 wide rather than 4096: 10 classes and 50k training images need less
      capacity than 1000 classes and 1.2M images.

    ``overlap`` pooling is max-pool 3/2 with padding 1 and ``nonoverlap`` is 2/2, so both give
    32 -> 16 -> 8 -> 4 and the two pooling settings have identical parameter counts: the
    ablation changes only the pooling.
    """

    input_size = 32
    conv_channels = (64, 192, 384, 384, 256)
    conv1_geometry = {"kernel_size": 5, "stride": 1, "padding": 2}
    pool_geometry = {
        # Padding 1 makes 3/2 halve even sizes exactly, as 2/2 does.
        "overlap": {"kernel_size": 3, "stride": 2, "padding": 1},
        "nonoverlap": {"kernel_size": 2, "stride": 2},
    }
    final_map = 4
    hidden = 2048

    def __init__(
        self,
        num_classes: int = 10,
        lrn: bool = True,
        lrn_convention: str = "paper",
        pool: str = "overlap",
        towers: int = 2,
        activation: str = "relu",
        dropout: float = 0.5,
        init: str = "paper",
        conv_width: float = 1.0,
        init_bias: float = 1.0,
        conv_impl: str = "grouped",
        lrn_impl: str = "torch",
    ) -> None:
        # Own signature only to change num_classes' default (and keep hparams explicit).
        super().__init__(
            num_classes=num_classes,
            lrn=lrn,
            lrn_convention=lrn_convention,
            pool=pool,
            towers=towers,
            activation=activation,
            dropout=dropout,
            init=init,
            conv_width=conv_width,
            init_bias=init_bias,
            conv_impl=conv_impl,
            lrn_impl=lrn_impl,
        )


# --------------------------------------------------------------------------------------------
# torchvision's variant
# --------------------------------------------------------------------------------------------


class AlexNetTV(_FCHead):
    """torchvision's AlexNet: one tower, 64-192-384-256-256 kernels, no LRN, 61,100,840 params.

    This is the net torchvision ships as ``alexnet`` (its docs cite "One weird trick for
    parallelizing convolutional neural networks", Krizhevsky 2014), the one most model zoos and
    blog posts call AlexNet. It has no ``lrn``/``pool``/``towers`` knobs on purpose. An
    adaptive 6x6 average pool before fc6 lets it accept inputs larger than 224.
    ``init="kaiming"`` by default (torchvision itself keeps PyTorch's defaults: ``"torch"``).
    """

    input_size = 224
    hidden = 4096

    def __init__(
        self,
        num_classes: int = 1000,
        dropout: float = 0.5,
        activation: str = "relu",
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("init", init, INITS)
        _check_dropout(dropout)
        self.act = _activation(activation)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2)
        self.pool1 = nn.MaxPool2d(3, stride=2)
        self.conv2 = nn.Conv2d(64, 192, kernel_size=5, padding=2)
        self.pool2 = nn.MaxPool2d(3, stride=2)
        self.conv3 = nn.Conv2d(192, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, kernel_size=3, padding=1)
        self.pool5 = nn.MaxPool2d(3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self._add_fc_layers(256 * 6 * 6, dropout, num_classes)
        init_weights(self, init, activation)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """conv1..avgpool: the ``(N, 256, 6, 6)`` map the classifier reads."""
        x = self.pool1(self.act(self.conv1(x)))
        x = self.pool2(self.act(self.conv2(x)))
        x = self.act(self.conv3(x))
        x = self.act(self.conv4(x))
        x = self.pool5(self.act(self.conv5(x)))
        return self.avgpool(x)


def num_parameters(model: nn.Module) -> int:
    """Total number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["AlexNet", "AlexNetCifar", "AlexNetTV", "init_weights", "num_parameters"]
