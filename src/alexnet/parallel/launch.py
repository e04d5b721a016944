"""What `train.py` needs to know about running on several processes (`trainer=ddp|towers`).

- The batch: ``data.batch_size`` is the *global* batch, the number of images behind one SGD
  step (the paper's 128 by default). :func:`split_global_batch` gives each data-parallel rank
  its share, so the optimizer sees the same averaged gradient on 1, 2 or 16 GPUs and the
  learning rate needs no change. (The towers are not data-parallel: both see the whole batch.)
- Rank zero before Lightning knows it: loggers are built before the trainer starts the
  processes, so the rank must come from the environment (:func:`mark_rank_from_env`).
- Hydra multirun cannot host a multi-process run (:func:`check_not_multirun`).
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Mapping
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from alexnet.parallel.strategy import TowerClassifier, TowerStrategy, check_tower_world
from alexnet.training.module import Classifier

log = logging.getLogger(__name__)


def data_parallel_size(trainer: L.Trainer) -> int:
    """How many ranks split each batch: all of them with DDP, none with the towers."""
    strategy = trainer.strategy
    if isinstance(strategy, TowerStrategy):
        return strategy.data_parallel_size
    if isinstance(strategy, ParallelStrategy):
        return trainer.num_devices * trainer.num_nodes
    return 1


def split_global_batch(datamodule, trainer: L.Trainer) -> int:
    """Set ``datamodule.batch_size`` to this rank's share of the global batch; returns it."""
    ranks = data_parallel_size(trainer)
    total = datamodule.batch_size
    if total % ranks:
        raise ValueError(
            f"data.batch_size={total} is the global batch and must split evenly over the "
            f"{ranks} data-parallel devices; pick a multiple of {ranks}"
        )
    datamodule.batch_size = total // ranks
    if ranks > 1:
        log.info("global batch %d = %d devices x %d", total, ranks, total // ranks)
    return datamodule.batch_size


def world_size(trainer: L.Trainer) -> int:
    return (
        trainer.num_devices * trainer.num_nodes
        if isinstance(trainer.strategy, ParallelStrategy)
        else 1
    )


def check_not_multirun(trainer: L.Trainer) -> None:
    """Lightning's own launcher re-runs the script for every extra rank; under `-m` each of
    those would run the whole sweep again. Grids run one process per job instead (docs/parallel.md).
    Ranks started by torchrun or SLURM (e.g. Hydra's submitit launcher) are fine."""
    if not isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError(
            "a multi-process trainer (trainer=ddp/towers) cannot start its ranks inside a Hydra "
            "multirun (-m): run each grid job on one device (trainer=gpu, one "
            "CUDA_VISIBLE_DEVICES per sweep), or start the ranks with SLURM/torchrun "
            "(docs/parallel.md)"
        )


def prepare_parallel(trainer: L.Trainer, datamodule) -> None:
    """Checks and the batch split, after the trainer is built and before it fits."""
    if isinstance(trainer.strategy, TowerStrategy):
        check_tower_world(trainer.num_nodes, trainer.num_devices)
    check_not_multirun(trainer)
    split_global_batch(datamodule, trainer)
    if world_size(trainer) > 1:
        trainer.callbacks.append(RankSeed())
        # Lightning suggests sync_dist for every epoch-level log; ours need none: the errors
        # come from torchmetrics (synced across ranks), the losses are logged with sync_dist,
        # and the rest (lr, img/s) are the same on every rank.
        warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\(")


class RankSeed(L.Callback):
    """Give every rank its own random streams once the ranks are known.

    Lightning seeds all ranks alike, so under DDP rank 1's dropout masks (and, with
    num_workers=0, its crops and flips) would repeat rank 0's on other images, and the two
    towers would drop the same unit positions. Rank 0 keeps the run's seed.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank == 0:
            return
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) + trainer.global_rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)


def mark_rank_from_env(environ=os.environ) -> None:
    """Make rank-zero-only code (W&B run creation, hyper-parameter logging) skip this process
    if the environment says it is not global rank 0, before Lightning sets the rank.

    Lightning reads RANK, LOCAL_RANK and SLURM_PROCID at import; a node started by hand with
    ``NODE_RANK=1`` (its launcher then starts that node's other ranks) has none of them, and
    would otherwise open a second W&B run.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if any(k in environ for k in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")):
        return
    node = int(environ.get("NODE_RANK", environ.get("GROUP_RANK", 0)))
    if node > 0 and rank_zero_only.rank == 0:
        rank_zero_only.rank = node  # any non-zero value; Lightning sets the true one in setup


class RankZeroLogs(logging.Filter):
    """Under DDP every rank runs the same code and would print every line N times: on ranks
    other than 0 only warnings and errors pass, marked with their rank. The rank is read at
    each record (Lightning sets it during setup), so the filter can be installed first."""

    def filter(self, record: logging.LogRecord) -> bool:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        rank = getattr(rank_zero_only, "rank", 0)
        if rank == 0:
            return True
        if record.levelno < logging.WARNING:
            return False
        if not getattr(record, "rank_marked", False):
            record.msg, record.rank_marked = f"[rank {rank}] {record.msg}", True
        return True


def log_on_rank_zero(logger: logging.Logger | None = None) -> None:
    """Install `RankZeroLogs` on the handlers of `logger` (the root logger: what Hydra set up)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RankZeroLogs) for f in handler.filters):
            handler.addFilter(RankZeroLogs())


def module_class(trainer_cfg: Mapping[str, Any]) -> type[Classifier]:
    """The LightningModule the trainer config needs: the towers' one for `trainer=towers`."""
    strategy = trainer_cfg.get("strategy")
    target = strategy.get("_target_") if isinstance(strategy, Mapping) else None
    if target and issubclass(hydra.utils.get_class(target), TowerStrategy):
        return TowerClassifier
    return Classifier
