"""The networks, as plain ``nn.Module``s built from keyword arguments, and a name registry.

``build_model("alexnet", lrn=False)`` is what configs and checkpoints use; add a new network by
adding an entry to :data:`MODELS`.
"""

from __future__ import annotations

from torch import nn

from alexnet.models.alexnet import AlexNet, AlexNetCifar, AlexNetTV, num_parameters
from alexnet.models.four_layer import FourLayerCNN
from alexnet.models.lrn import LocalResponseNorm
from alexnet.models.vgg import VGG, VGGCifar

# model.name in the configs -> class; the class's keyword arguments are the rest of conf/model.
MODELS: dict[str, type[nn.Module]] = {
    "alexnet": AlexNet,
    "alexnet_cifar": AlexNetCifar,
    "alexnet_tv": AlexNetTV,
    "four_layer": FourLayerCNN,
    "vgg": VGG,
    "vgg_cifar": VGGCifar,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """The network registered as ``name``, built with ``kwargs``."""
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is unknown; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = [
    "MODELS",
    "AlexNet",
    "AlexNetCifar",
    "AlexNetTV",
    "FourLayerCNN",
    "LocalResponseNorm",
    "VGG",
    "VGGCifar",
    "build_model",
    "num_parameters",
]
