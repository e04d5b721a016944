"""What the entry points (`python -m alexnet.train`, `.eval`, `.figures`, `.bench`, `.prepare`,
`.prepare_store`, `.check_data`) share, so that no entry imports another: where the configs are,
how a user's mistake is reported (one line), and the builders that turn a composed config into
the objects a run uses -- the same ones for training, evaluation, figures and benchmarks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from alexnet.config.hardware import resolve_auto
from alexnet.data import DataError
from alexnet.parallel.launch import module_class
from alexnet.training.checkpoints import init_from_checkpoint
from alexnet.training.module import Classifier
from alexnet.training.nonfinite import NonFiniteLoss


def build_data(cfg: DictConfig) -> L.LightningDataModule:
    """Instantiate the data module and read the data now, before any model is built."""
    aug = hydra.utils.instantiate(cfg.aug, _convert_="all") if cfg.get("aug") else None
    # Through a partial: an object passed to `instantiate` itself would become a DictConfig.
    datamodule = hydra.utils.instantiate(cfg.data, _partial_=True)(aug=aug)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The `callbacks` nodes (conf/callbacks), built in their order; one set to null is off."""
    return [hydra.utils.instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The `logger` nodes (conf/logger), built in their order; one set to null is off. Nothing is
    started yet (`alexnet.training.tracking.start_loggers` starts the W&B run). Lists and dicts
    reach them as plain ones: wandb.init refuses OmegaConf's containers."""
    nodes = (cfg.get("logger") or {}).values()
    return [hydra.utils.instantiate(node, _convert_="all") for node in nodes if node]


def build_module(cfg: DictConfig) -> Classifier:
    resolve_auto(cfg)  # channels_last: auto -> a bool (a no-op after train() resolved it)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    # How to initialise is a training choice, not part of the network a checkpoint rebuilds.
    init_from = model.pop("init_from", None)
    sched = cfg.get("sched")
    module = module_class(cfg.trainer)(
        model=model,
        optimizer=hydra.utils.instantiate(cfg.optim),
        scheduler=hydra.utils.instantiate(sched) if sched and "_target_" in sched else None,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )
    if init_from:
        init_from_checkpoint(module.net, init_from)
    return module


def check_ckpt_path(ckpt_path: str | None) -> str | None:
    if ckpt_path and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist; give a .ckpt file")
    return ckpt_path


USER_ERRORS = (DataError, ValueError, FileNotFoundError, NonFiniteLoss)


def report_user_error(err: Exception) -> None:
    """One line naming the problem and its fix; the traceback only with HYDRA_FULL_ERROR=1."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Around an entry's work: a user's mistake (USER_ERRORS) ends the process with one line."""
    try:
        yield
    except USER_ERRORS as err:
        report_user_error(err)


__all__ = [
    "USER_ERRORS",
    "build_callbacks",
    "build_data",
    "build_loggers",
    "build_module",
    "check_ckpt_path",
    "one_line_errors",
    "report_user_error",
]
