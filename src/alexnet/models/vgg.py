"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition") as plain ``nn.Module`` s, read top to bottom like the paper's sections 2 and 3.

Section 2.1/2.2, Table 1 -- the configurations
    Five blocks of 3x3 convolutions (stride 1, padding 1, so the spatial size is kept), each
    block followed by a 2x2 stride-2 max-pool; then FC-4096, FC-4096, FC-classes. ReLU after
    every hidden layer; dropout 0.5 on the first two FC layers. Config C's third conv in blocks
    3-5 is 1x1 (padding 0). A-LRN is A with Krizhevsky's LRN after the first conv layer.

    Layers are named as in the authors' Caffe release: ``conv{block}_{i}``, ``relu{block}_{i}``,
    ``pool{block}``, ``lrn1`` (A-LRN), then ``fc6``, ``fc7``, ``fc8``.

Table 2 -- parameter counts at 1000 classes (millions): A, A-LRN 133; B 133; C 134; D 138; E 144.
    Exact integers (``PARAM_COUNTS``) from summing the layer sizes by hand:
    FC layers 25088*4096+4096 + 4096*4096+4096 + 4096*1000+1000 = 123,642,856 in every config.

Section 3.1 -- training
    Deep configs were initialised from a trained A: ``init_from`` copies A's first four conv layers
    and its three FC layers. A's first four convs are conv1_1, conv2_1, conv3_1, conv3_2; they go
    into the *same-named* layers of the deeper net (the only reading under which the shapes
    agree -- the deeper net's 2nd conv is conv1_2, 64->64, while A's is conv2_1, 64->128).

Section 3.2 -- dense evaluation
    ``dense_forward`` re-expresses the FC layers as convolutions (fc6 as a 7x7 conv, fc7/fc8 as
    1x1) over the whole rescaled image; ``dense_scores`` averages the class score map spatially and
    averages the soft-max posteriors of the image and its horizontal flip.

``VGGCifar`` keeps the conv stacks for 32x32 inputs (see its docstring).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from alexnet.models.lrn import CONVENTIONS, LocalResponseNorm

# Table 1. An int is a 3x3 conv with that many output channels, "1x1:N" a 1x1 conv (config C),
# one inner list per block; every block ends in a 2x2/2 max-pool.
CONFIGS: dict[str, list[list[int | str]]] = {
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "C": [
        [64, 64],
        [128, 128],
        [256, 256, "1x1:256"],
        [512, 512, "1x1:512"],
        [512, 512, "1x1:512"],
    ],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}
CONFIGS["A_LRN"] = CONFIGS["A"]  # same convs; the LRN is switched on by `_resolve_lrn`

# Table 2, as exact integers at num_classes=1000 (hand sums; see module docstring).
PARAM_COUNTS = {
    "A": 132_863_336,
    "A_LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}

ACTIVATIONS = ("relu", "tanh")
INITS = ("kaiming", "paper", "glorot")
SPATIAL_REDUCTIONS = ("mean", "sum")
N_COPIED_CONVS = 4  # section 3.1: "the first four convolutional layers" of net A
# Std of raw 0..255 pixels minus the mean colour: ~58 on ImageNet (torchvision's 0.226 * 255),
# ~64 on CIFAR-10. With init=kaiming the network multiplies its input by 1 / RAW_PIXEL_STD.
RAW_PIXEL_STD = 60.0


def _check_choice(knob: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{knob}={value!r} is unknown; use one of {', '.join(allowed)}")
    return str(value)


def canonical_config(config: str) -> str:
    """'d', 'A-LRN', 'a_lrn' -> 'D', 'A_LRN'; ValueError for anything outside Table 1."""
    name = str(config).upper().replace("-", "_")
    if name not in CONFIGS:
        raise ValueError(f"config={config!r} is unknown; use one of {', '.join(CONFIGS)}")
    return name


def _resolve_lrn(config: str, lrn: bool | None) -> bool:
    """``lrn=None`` follows the config (on only for A_LRN); True/False overrides it."""
    if lrn is None:
        return config == "A_LRN"
    if not isinstance(lrn, bool):
        raise ValueError(f"lrn={lrn!r} is unknown; use one of None, True, False")
    return lrn


def _resolve_input_scale(init: str, input_scale: float | None) -> float:
    """The factor the network multiplies its input by before conv1_1.

    The data are the paper's raw pixels minus the mean colour (std ~60). The paper's N(0, 0.01)
    init and Glorot's (as the authors ran it in Caffe) were used on exactly that, so they get 1.
    Kaiming init assumes unit-variance inputs: without rescaling, its logits start ~50x too large
    (initial loss ~80 on CIFAR-10), and scaling conv1_1's initial weights down instead leaves
    conv1_1's gradients ~60x too large for its weights, which diverged at lr 0.01 within 5 steps
    in our runs. A fixed input scale fixes both, so ``None`` gives 1 / RAW_PIXEL_STD for kaiming.
    """
    if input_scale is None:
        return 1.0 / RAW_PIXEL_STD if init == "kaiming" else 1.0
    if not float(input_scale) > 0:
        raise ValueError(f"input_scale={input_scale!r} must be positive (or None)")
    return float(input_scale)


def _activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.Tanh()


def _conv_stack(
    config: str, width: float, lrn: bool, lrn_convention: str, activation: str
) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_ch = 3
    for b, block in enumerate(CONFIGS[config], start=1):
        for i, spec in enumerate(block, start=1):
            one_by_one = isinstance(spec, str)
            out_ch = max(1, round(int(str(spec).removeprefix("1x1:")) * width))
            k = 1 if one_by_one else 3
            layers[f"conv{b}_{i}"] = nn.Conv2d(in_ch, out_ch, k, stride=1, padding=k // 2)
            layers[f"relu{b}_{i}"] = _activation(activation)
            if lrn and b == 1 and i == 1:
                # Krizhevsky's LRN (k=2, n=5, alpha=1e-4, beta=0.75), after the first conv's ReLU.
                layers["lrn1"] = LocalResponseNorm(5, 1e-4, 0.75, 2.0, convention=lrn_convention)
            in_ch = out_ch
        layers[f"pool{b}"] = nn.MaxPool2d(2, 2)
    return nn.Sequential(layers)


class _VGGNet(nn.Module):
    """Shared body of VGG and VGGCifar: conv stack, three FCs, init, dense evaluation."""

    input_size: int
    feature_size: int  # side of the last feature map at input_size (7 for 224, 1 for 32)

    def __init__(
        self,
        config: str,
        num_classes: int,
        lrn: bool | None,
        lrn_convention: str,
        activation: str,
        dropout: float,
        init: str,
        width: float,
        hidden: int,
        input_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.config = canonical_config(config)
        self.lrn = _resolve_lrn(self.config, lrn)
        self.activation = _check_choice("activation", activation, ACTIVATIONS)
        self.init = _check_choice("init", init, INITS)
        self.lrn_convention = _check_choice("lrn_convention", lrn_convention, CONVENTIONS)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout!r} must lie in [0, 1)")
        if not float(width) > 0:
            raise ValueError(f"width={width!r} must be positive")
        self.num_classes = num_classes
        self.input_scale = _resolve_input_scale(self.init, input_scale)

        # Section 2.1: conv stack, then the classifier.
        self.features = _conv_stack(self.config, width, self.lrn, lrn_convention, activation)
        channels = self.convs[-1].out_channels
        self.fc6 = nn.Linear(channels * self.feature_size**2, hidden)
        self.act6 = _activation(activation)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(hidden, hidden)
        self.act7 = _activation(activation)
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Linear(hidden, num_classes)
        self.reset_parameters()

    # -- structure --------------------------------------------------------------------------
    @property
    def convs(self) -> list[nn.Conv2d]:
        """The conv layers in forward order (conv1_1 first)."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    @property
    def conv_names(self) -> list[str]:
        """Names of ``convs`` inside ``features`` (``conv1_1``, ``conv1_2``, ...)."""
        return [n for n, m in self.features.named_children() if isinstance(m, nn.Conv2d)]

    @property
    def fcs(self) -> list[nn.Linear]:
        return [self.fc6, self.fc7, self.fc8]

    # -- section 3.1: initialisation --------------------------------------------------------
    def reset_parameters(self) -> None:
        """Initialise every conv/FC per ``init``; biases are zero in all schemes.

        - ``kaiming`` (default): He et al. normal, fan-in, gain for ``activation`` (linear gain
          for fc8). The paper notes after submission that a Glorot-style random init trains the
          deep configs without pre-training from A; this is the ReLU-correct version of that.
          He et al. assume unit-variance inputs; with it the network scales its raw-pixel input
          by ``input_scale`` = 1 / ``RAW_PIXEL_STD`` (see ``_resolve_input_scale``).
        - ``glorot``: Glorot & Bengio uniform, unscaled, as the authors' Caffe runs used it on raw
          pixels (its variance halves at every ReLU, which offsets the pixel scale).
        - ``paper``: N(0, 0.01^2) -- the paper's random init for net A (deeper nets then need
          ``init_from`` a trained A).
        """
        layers = [*self.convs, *self.fcs]
        for layer in layers:
            if self.init == "paper":
                nn.init.normal_(layer.weight, 0.0, 0.01)
            elif self.init == "glorot":
                nn.init.xavier_uniform_(layer.weight)
            else:
                gain = "linear" if layer is self.fc8 else self.activation
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity=gain)
            nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def init_from(self, other: _VGGNet) -> list[str]:
        """Copy ``other``'s first four conv layers and its fc6/fc7/fc8 into this net (section 3.1).

        Convs go into this net's layers of the *same name* (for a source net A: conv1_1,
        conv2_1, conv3_1, conv3_2), so the intermediate layers of a deeper net stay as
        initialised. Returns the names of the parameters of ``self`` that were overwritten.
        Raises ValueError when a layer is missing here or its shape differs.
        """
        pairs: list[tuple[str, nn.Module, nn.Module]] = []
        own = dict(self.features.named_children())
        for name in other.conv_names[:N_COPIED_CONVS]:
            if name not in own:
                raise ValueError(f"init_from: {name} of config {other.config} has no counterpart")
            pairs.append((f"features.{name}", own[name], getattr(other.features, name)))
        pairs += [(fc, getattr(self, fc), getattr(other, fc)) for fc in ("fc6", "fc7", "fc8")]
        if other.input_scale != self.input_scale:  # conv1_1's weights assume their input's scale
            raise ValueError(
                f"init_from: the source net scales its input by {other.input_scale:g} (init="
                f"{other.init}), this one by {self.input_scale:g} (init={self.init}); use the "
                f"same init or set input_scale to match"
            )

        for name, dst, src in pairs:  # check everything before touching anything
            for p in ("weight", "bias"):
                if getattr(dst, p).shape != getattr(src, p).shape:
                    raise ValueError(
                        f"init_from: {name}.{p} has shape {tuple(getattr(dst, p).shape)} here "
                        f"but {tuple(getattr(src, p).shape)} in the source net"
                    )
        copied = []
        for name, dst, src in pairs:
            for p in ("weight", "bias"):
                getattr(dst, p).copy_(getattr(src, p))
                copied.append(f"{name}.{p}")
        return copied

    # -- forward on a crop ------------------------------------------------------------------
    def _check_crop(self, feats: torch.Tensor) -> None:
        if feats.shape[-2:] != (self.feature_size, self.feature_size):
            raise ValueError(
                f"{type(self).__name__}.forward expects {self.input_size}x{self.input_size} crops "
                f"(feature map {self.feature_size}x{self.feature_size}), got a "
                f"{tuple(feats.shape[-2:])} feature map; use dense_forward for whole images"
            )

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last pooled feature map of the (input-scaled) image."""
        return self.features(x * self.input_scale if self.input_scale != 1.0 else x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 activations (after its non-linearity, before its dropout), shape (N, hidden)."""
        feats = self.conv_features(x)
        self._check_crop(feats)
        h = self.drop6(self.act6(self.fc6(torch.flatten(feats, 1))))
        return self.act7(self.fc7(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) for input_size x input_size crops."""
        return self.fc8(self.drop7(self.embed(x)))

    # -- section 3.2: dense evaluation ------------------------------------------------------
    def dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class score map (N, num_classes, h, w) for a whole image of any size whose feature
        map is at least feature_size x feature_size (>= input_size per side suffices).

        fc6 becomes a feature_size x feature_size conv and fc7/fc8 1x1 convs whose kernels are
        *views* of the Linear weights, so the two paths can never disagree after training.
        At exactly input_size the map is 1x1 and equals ``forward(x)``.
        """
        feats = self.conv_features(x)
        k = self.feature_size
        if feats.shape[-2] < k or feats.shape[-1] < k:
            raise ValueError(
                f"dense_forward needs a feature map of at least {k}x{k}; input "
                f"{tuple(x.shape[-2:])} gives {tuple(feats.shape[-2:])}"
            )
        c = feats.shape[1]
        h = F.conv2d(feats, self.fc6.weight.view(-1, c, k, k), self.fc6.bias)
        h = self.drop6(self.act6(h))
        h = F.conv2d(h, self.fc7.weight.view(*self.fc7.weight.shape, 1, 1), self.fc7.bias)
        h = self.drop7(self.act7(h))
        return F.conv2d(h, self.fc8.weight.view(*self.fc8.weight.shape, 1, 1), self.fc8.bias)

    def dense_scores(
        self, x: torch.Tensor, flip: bool = True, spatial: str = "mean"
    ) -> torch.Tensor:
        """Class posteriors (N, num_classes) from dense evaluation of the whole image.

        The score map is pooled over space (``spatial="mean"``: the paper's "spatially averaged";
        ``"sum"``: sum-pooled, the same up to a factor h*w that sharpens the soft-max), then
        soft-maxed; with ``flip`` the posteriors of the image and its horizontal flip are
        averaged. With mean pooling, a single input_size crop gives softmax(forward(x)).
        Put the model in eval mode first (dropout is otherwise active).
        """
        _check_choice("spatial", spatial, SPATIAL_REDUCTIONS)

        def posterior(img: torch.Tensor) -> torch.Tensor:
            scores = self.dense_forward(img)
            pooled = scores.mean((-2, -1)) if spatial == "mean" else scores.sum((-2, -1))
            return pooled.softmax(dim=1)

        probs = posterior(x)
        if flip:
            probs = (probs + posterior(torch.flip(x, dims=(-1,)))) / 2
        return probs


class VGG(_VGGNet):
    """The paper's ImageNet networks (Table 1) on 224x224 crops.

    Args:
        config: "A", "A_LRN", "B", "C", "D" or "E" (case-insensitive; "A-LRN" accepted).
        num_classes: size of fc8.
        lrn: None follows the config (LRN after conv1_1 only in A_LRN); True/False overrides,
            so ``VGG("A", lrn=True)`` is A_LRN and ``VGG("A_LRN", lrn=False)`` is A.
        lrn_convention: "paper" or "torch" alpha convention of ``LocalResponseNorm``.
        activation: "relu" (paper) or "tanh", after every hidden layer.
        dropout: drop probability after fc6 and fc7 (paper 0.5).
        init: "kaiming" (default), "paper" (N(0, 0.01^2)) or "glorot"; biases zero.
        input_scale: factor applied to the input before conv1_1; None: 1/60 for kaiming (raw
            pixels to unit scale), 1 for paper and glorot (see ``_resolve_input_scale``).
    """

    input_size = 224
    feature_size = 7

    def __init__(
        self,
        config: str = "A",
        num_classes: int = 1000,
        lrn: bool | None = None,
        lrn_convention: str = "paper",
        activation: str = "relu",
        dropout: float = 0.5,
        init: str = "kaiming",
        input_scale: float | None = None,
    ) -> None:
        super().__init__(
            config,
            num_classes,
            lrn,
            lrn_convention,
            activation,
            dropout,
            init,
            1.0,
            4096,
            input_scale,
        )


class VGGCifar(_VGGNet):
    """The same conv stacks on 32x32 CIFAR images.

    Five 2x2 pools take 32x32 to a 1x1 map, so fc6 sees only 512*width features; FC layers of
    4096 would then hold ~20M parameters for 50k training images, so the classifier is
    FC-hidden, FC-hidden, FC-classes with ``hidden`` = the last conv's width (512 at width 1),
    the usual CIFAR adaptation. ``width`` scales every conv's channel count (default 1.0, the
    paper's widths: D has 15.2M parameters at 10 classes); use 0.25 or 0.5 for quick CPU runs.
    ``dense_forward`` works too (fc6 is then a 1x1 conv) for inputs >= 32.

    Other knobs as in ``VGG``.
    """

    input_size = 32
    feature_size = 1

    def __init__(
        self,
        config: str = "A",
        num_classes: int = 10,
        lrn: bool | None = None,
        lrn_convention: str = "paper",
        activation: str = "relu",
        dropout: float = 0.5,
        init: str = "kaiming",
        width: float = 1.0,
        input_scale: float | None = None,
    ) -> None:
        hidden = max(1, round(512 * float(width)))
        super().__init__(
            config,
            num_classes,
            lrn,
            lrn_convention,
            activation,
            dropout,
            init,
            width,
            hidden,
            input_scale,
        )
