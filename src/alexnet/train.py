"""Train a network: `python -m alexnet.train [experiment=...] [key=value ...]`.

Seeds, builds the data (failing early and clearly when it is missing), the network and the
trainer from the composed config, fits, tests the best checkpoint, and writes `results.json` into
the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from alexnet.callbacks import SpeedMonitor
from alexnet.data import DataError
from alexnet.init_from import init_from_checkpoint
from alexnet.loggers import build_loggers, finish_wandb
from alexnet.module import Classifier

log = logging.getLogger(__name__)
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def build_data(cfg: DictConfig) -> L.LightningDataModule:
    """Instantiate the data module and read the data now, before any model is built."""
    aug = OmegaConf.to_container(cfg.aug, resolve=True) if "aug" in cfg else None
    datamodule = hydra.utils.instantiate(cfg.data, aug=aug)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_callbacks(cfg: DictConfig, output_dir: Path) -> list[L.Callback]:
    spec = cfg.callbacks
    callbacks: list[L.Callback] = [SpeedMonitor()]
    if spec.get("checkpoint"):
        best = dict(spec.checkpoint)
        save_last = best.pop("save_last", True)
        callbacks.append(
            ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="best-epoch{epoch:03d}",
                            auto_insert_metric_name=False, **best)
        )
        if save_last:
            # Lightning 2.6's save_last only writes when a top-k file was written in the same
            # step; a monitor-less callback writes last.ckpt after every epoch, better or not.
            callbacks.append(
                ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="last",
                                monitor=None, save_top_k=1, enable_version_counter=False)
            )
    if spec.get("progress_bar"):
        # Refreshing the bar every step costs measurable throughput on fast GPUs.
        callbacks.append(TQDMProgressBar(refresh_rate=spec.get("progress_refresh", 20)))
    return callbacks


def build_module(cfg: DictConfig) -> Classifier:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    # How to initialise is a training choice, not part of the network a checkpoint rebuilds.
    init_from = model.pop("init_from", None)
    sched = cfg.get("sched")
    module = Classifier(
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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test as `cfg` says; returns what `results.json` holds."""
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = check_ckpt_path(cfg.get("ckpt_path"))

    datamodule = build_data(cfg)
    module = build_module(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg.get("logger"), output_dir, cfg.task_name, list(cfg.tags), config)
    callbacks = build_callbacks(cfg, output_dir)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks,
        enable_progress_bar=bool(cfg.callbacks.get("progress_bar")),
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint else ""
        if checkpoint is not None and checkpoint.best_model_score is not None:
            metrics["val/best_top1_err"] = float(checkpoint.best_model_score)
        if cfg.get("test"):
            tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics.update({k: float(v) for k, v in tested[0].items()})
        results = {
            "task_name": cfg.task_name,
            "status": "ok",
            "metrics": metrics,
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "wall_time_s": time.perf_counter() - start,
            "train_img_per_s": next(c for c in callbacks if isinstance(c, SpeedMonitor)).img_per_s,
            "best_ckpt": best,
            "config": config,
        }
        write_results(output_dir, results)
        return results
    finally:
        finish_wandb()


def write_results(output_dir: Path, results: dict[str, Any]) -> Path:
    """Write atomically: a reader (the ablation report) never sees half a file."""
    path = output_dir / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(path)
    log.info("results written to %s", path)
    return path


USER_ERRORS = (DataError, ValueError, FileNotFoundError)


def report_user_error(err: Exception) -> None:
    """One line naming the problem and its fix; the traceback only with HYDRA_FULL_ERROR=1."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    try:
        train(cfg)
    except USER_ERRORS as err:
        report_user_error(err)


if __name__ == "__main__":
    main()
