"""Loading checkpoints without running code from them.

A `.ckpt` is a pickle, and unpickling can call any Python function the file names: a checkpoint
from a colleague, a model zoo or a shared drive could delete files or open a shell. Every load in
this project therefore uses `weights_only=True` (torch's restricted unpickler: tensors,
containers, numbers, strings, nothing else): `trainer.fit/test(..., weights_only=True)`,
`Classifier.load_from_checkpoint(..., weights_only=True)` and `load_checkpoint` below. (Lightning
2.6 passes `weights_only=None` through to `torch.load` unless told otherwise, which torch >= 2.6
also treats as True; we say so explicitly rather than rely on a default.)

This project's checkpoints need nothing beyond that: hyper-parameters are plain dicts, RNG states
plain tensors and tuples (alexnet.training.resume). `SAFE_GLOBALS` is where a type would be
allow-listed if a future checkpoint needed one.

`check_checkpoint` runs before any data or model work: it names what is wrong with a path (missing,
a folder, not a checkpoint, carrying Python objects, lacking what training or evaluation needs)
in one line, by reading the file with weights_only loading, so nothing in it is executed.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.models import build_model

log = logging.getLogger(__name__)

# Types our checkpoints may hold beyond torch's default weights_only allow-list: none so far.
SAFE_GLOBALS: list[Any] = []

# What a checkpoint must hold to be resumed from (Lightning's full training state) or evaluated.
NEEDS = {
    "resume": ("state_dict", "loops", "optimizer_states"),
    "eval": ("state_dict", "hyper_parameters"),
}


class CheckpointError(ValueError):
    """A checkpoint path that cannot (or must not) be loaded; the message says why."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """`torch.load(path, weights_only=True)`, with a one-line CheckpointError when it refuses."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as err:
            raise CheckpointError(_refusal(path, err)) from None


def _refusal(path: str | Path, err: Exception) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint: torch's own message has to do
        names = []
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    names = [n for n in names if n not in allowed]
    what = ", ".join(names) if names else str(err).splitlines()[0]
    return (
        f"ckpt_path={path} holds Python objects that loading it would run ({what}); refused "
        f"and nothing was executed: checkpoints of this project never hold any, so this file "
        f"was made elsewhere or tampered with"
    )


def check_checkpoint(path: str | Path, purpose: str = "resume") -> dict[str, Any]:
    """The checkpoint (tensors memory-mapped, not read), if `path` loads safely and holds what
    `purpose` needs (`"resume"` training or `"eval"`); CheckpointError otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"ckpt_path={path} does not exist; give a .ckpt file, e.g. "
            f"logs/<task>/<date>/<time>/checkpoints/last.ckpt"
        )
    if path.is_dir():
        raise CheckpointError(
            f"ckpt_path={path} is a folder; give the .ckpt file in it, e.g. {path / 'last.ckpt'}"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"ckpt_path={path} is not a PyTorch checkpoint (not torch.save's "
            f"zip format); give a .ckpt file written by training"
        )
    # mmap: tensors stay on disk, so checking a 700 MB checkpoint costs milliseconds.
    try:
        checkpoint = load_checkpoint(path, mmap=True)
    except CheckpointError:
        raise
    except Exception as err:  # a damaged zip, a truncated copy, ...
        raise CheckpointError(
            f"ckpt_path={path} cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); is the copy "
            f"complete?"
        ) from None
    missing = [k for k in NEEDS[purpose] if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        doing = "resume training" if purpose == "resume" else "evaluate"
        raise CheckpointError(
            f"ckpt_path={path} lacks {', '.join(missing)} needed to {doing}; "
            f"give a checkpoint written by alexnet.train (e.g. last.ckpt)"
        )
    if purpose == "eval" and "model" not in checkpoint["hyper_parameters"]:
        raise CheckpointError(
            f"ckpt_path={path} has no model hyper-parameters; give a "
            f"checkpoint written by alexnet.train"
        )
    return checkpoint


# -- VGG: start a deeper net from a trained net A (model.init_from) --------------------------
# VGG section 3.1, optional: start a deeper configuration from a trained net A.
#
# "When training deeper architectures, we initialised the first four convolutional layers and the
# last three fully-connected layers with the layers of net A (the intermediate layers were
# initialised randomly)." -- ``model.init_from=path/to/A.ckpt`` in the train config does this
# (``alexnet.config.entry.build_module`` calls ``init_from_checkpoint``). The paper adds that a
# Glorot-style random initialisation makes the pre-training unnecessary, and the VGG networks here
# default to Kaiming initialisation, so this is a reproduction option, not a requirement.
#
# The source is any checkpoint this project wrote: its hyper-parameters rebuild the network, as in
# ``Classifier.load_from_checkpoint``, without Lightning or a config file.


PREFIX = "net."  # the Classifier keeps the network under `net`


def load_network(ckpt_path: str | Path) -> nn.Module:
    """The network stored in a checkpoint written by training (``.../checkpoints/*.ckpt``)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.init_from={ckpt_path} does not exist; give the .ckpt of a trained net A"
        )
    ckpt = load_checkpoint(path)
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
