"""VGG section 3.1, optional: start a deeper configuration from a trained net A.

"When training deeper architectures, we initialised the first four convolutional layers and the
last three fully-connected layers with the layers of net A (the intermediate layers were
initialised randomly)." -- ``model.init_from=path/to/A.ckpt`` in the train config does this
(``alexnet.train.build_module`` calls ``init_from_checkpoint``). The paper adds that a
Glorot-style random initialisation makes the pre-training unnecessary, and the VGG networks here
default to Kaiming initialisation, so this is a reproduction option, not a requirement.

The source is any checkpoint this project wrote: its hyper-parameters rebuild the network, as in
``Classifier.load_from_checkpoint``, without Lightning or a config file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from alexnet.models import build_model

log = logging.getLogger(__name__)
PREFIX = "net."  # the Classifier keeps the network under `net`


def load_network(ckpt_path: str | Path) -> nn.Module:
    """The network stored in a checkpoint written by training (``.../checkpoints/*.ckpt``)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.init_from={ckpt_path} does not exist; give the .ckpt of a trained net A"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = dict(ckpt.get("hyper_parameters", {}).get("model") or {})
    if not model:
        raise ValueError(
            f"model.init_from={ckpt_path} holds no model hyper-parameters; give a "
            f"checkpoint written by alexnet.train"
        )
    net = build_model(**model)
    state = {
        k.removeprefix(PREFIX): v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)
    }
    net.load_state_dict(state)
    return net


def init_from_checkpoint(net: nn.Module, ckpt_path: str | Path) -> list[str]:
    """Copy the first four convs and fc6-fc8 of the checkpoint's network into ``net`` (see
    ``VGG.init_from``); returns the names of the parameters of ``net`` that were overwritten."""
    if not hasattr(net, "init_from"):
        raise ValueError(
            f"model.init_from works for the VGG networks (vgg, vgg_cifar); "
            f"{type(net).__name__} cannot be initialised from net A"
        )
    source = load_network(ckpt_path)
    if type(source) is not type(net):
        raise ValueError(
            f"model.init_from={ckpt_path} holds a {type(source).__name__}, but this "
            f"run trains a {type(net).__name__}; give a checkpoint of the same kind"
        )
    copied = net.init_from(source)
    log.info(
        "initialised %d tensors of config %s from config %s in %s",
        len(copied),
        net.config,
        source.config,
        ckpt_path,
    )
    return copied
