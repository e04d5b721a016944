"""One training run from a composed config (what `python -m alexnet.train` runs): seeds, builds
the data (failing early and clearly when it is missing), the network and the trainer, fits, tests
the best checkpoint, and writes `results.json` into the run directory.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from alexnet.config.entry import build_callbacks, build_data, build_loggers, build_module
from alexnet.config.hardware import accelerator_type, describe, resolve_auto
from alexnet.config.validate import validate_config
from alexnet.parallel.launch import log_on_rank_zero, mark_rank_from_env, prepare_parallel
from alexnet.training import record
from alexnet.training.callbacks import SpeedMonitor
from alexnet.training.figure_callbacks import figure_callbacks, figures_at_train_end
from alexnet.training.lr_find import find_lr
from alexnet.training.multirun import AUTO, auto_ckpt_path, is_done
from alexnet.training.nonfinite import NonFiniteGuard, NonFiniteLoss
from alexnet.training.resume import Preempted, ResumeCheckpoint
from alexnet.training.tracking import finish_wandb, start_loggers, wandb_identity

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test as `cfg` says; returns what `results.json` holds."""
    resolve_auto(cfg)  # precision and memory format: what this machine runs fast
    if cfg.get("ckpt_path") == AUTO:  # requeue loops: continue the run in this dir, if any
        if is_done(cfg.paths.output_dir):
            log.info("ckpt_path=auto: %s finished already; nothing to do", cfg.paths.output_dir)
            return record.read_results(cfg.paths.output_dir)
        found = auto_ckpt_path(cfg.paths.output_dir)
        cfg.ckpt_path = str(found) if found is not None else None
    validate_config(cfg, "train")  # before any data or model work
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    mark_rank_from_env()  # before the loggers: one W&B run per training, not per rank
    log_on_rank_zero()  # and one console log: other ranks print only warnings
    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = cfg.get("ckpt_path")  # validate_config checked it exists

    datamodule = build_data(cfg)
    module = build_module(cfg)
    if cfg.get("lr_find"):
        return run_lr_find(cfg, module, datamodule, output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    parameters = sum(p.numel() for p in module.parameters())
    origin = provenance(cfg)  # commit, versions, device: in W&B's config as in results.json
    name, group, tags = wandb_identity(
        cfg.task_name, cfg.tags, output_dir, (cfg.get("logger") or {}).get("wandb")
    )
    run_config = {**config, "parameters": parameters, "provenance": origin}
    loggers = start_loggers(
        build_loggers(cfg), name, tags, run_config, group=group, resume_from=ckpt_path
    )
    callbacks = build_callbacks(cfg) + figure_callbacks(cfg.get("figures"), output_dir)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        enable_progress_bar=bool(cfg.callbacks.get("progress_bar")),
    )
    try:
        prepare_parallel(trainer, datamodule)  # data.batch_size is the global batch
        try:
            # weights_only: loading a checkpoint never runs code from it
            # (alexnet.training.checkpoints).
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            # the best-checkpoint callback (callbacks.checkpoint), if the run has one
            checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
            best = checkpoint.best_model_path if checkpoint else ""
            if checkpoint is not None and checkpoint.best_model_score is not None:
                metrics["val/best_top1_err"] = float(checkpoint.best_model_score)
            if cfg.get("test"):
                tested = trainer.test(
                    module, datamodule=datamodule, ckpt_path=best or None, weights_only=True
                )
                metrics.update({k: float(v) for k, v in tested[0].items()})
        except (SIGTERMException, NonFiniteLoss) as stop:
            raise stopped(stop, cfg, trainer, datamodule, callbacks, output_dir) from None
        except SystemExit:
            if not trainer.interrupted:
                raise
            # Lightning ends a fit or test stopped by Ctrl-C with exit(1) and Ctrl-C ignored
            # from then on. Give Ctrl-C back and raise it again, so that it ends the run as a
            # Ctrl-C outside fit does: a grid job records "interrupted", the sweep stops.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        results = {
            "task_name": cfg.task_name,
            "status": record.Status.OK,
            "metrics": metrics,
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "wall_time_s": time.perf_counter() - start,
            "train_time_s": train_time(callbacks),
            "train_img_per_s": next(c for c in callbacks if isinstance(c, SpeedMonitor)).img_per_s,
            "parameters": parameters,
            "provenance": origin,
            "best_ckpt": best,
            **health(ckpt_path, datamodule, callbacks),
            "config": config,
        }
        if trainer.is_global_zero:  # every rank gets here; one results.json per training
            write_results(output_dir, results)
            figures_at_train_end(cfg.get("figures"), module, datamodule, output_dir, trainer)
        return results
    finally:
        finish_wandb()


def run_lr_find(cfg: DictConfig, module, datamodule, output_dir: Path) -> dict[str, Any]:
    """The learning-rate range test instead of training (`lr_find=true`); returns what
    `lr_find.json` holds. Its trainer is the run's, minus loggers, callbacks and checkpoints."""
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=bool(cfg.callbacks.get("progress_bar")),
        max_epochs=-1,  # the test's step count ends it, however few batches an epoch has
    )
    prepare_parallel(trainer, datamodule)
    lr = cfg.optim.get("lr")
    return find_lr(trainer, module, datamodule, output_dir, lr, provenance(cfg))


def provenance(cfg: DictConfig) -> dict[str, Any]:
    device = describe(accelerator_type(cfg.trainer.get("accelerator")))
    return record.provenance(device, str(cfg.trainer.get("precision")))


def train_time(callbacks) -> float | None:
    """Seconds of training over every attempt of this run (resumed ones included)."""
    resume = next((c for c in callbacks if isinstance(c, ResumeCheckpoint)), None)
    return resume.train_time_s() if resume is not None else None


def health(ckpt_path, datamodule, callbacks) -> dict[str, Any]:
    """What went wrong but did not stop the run, for `results.json`."""
    guard = next((c for c in callbacks if isinstance(c, NonFiniteGuard)), None)
    bad = datamodule.bad_images()
    if bad:
        log.warning("problem images (skipped or converted, per split and kind): %s", bad)
    return {
        "resumed_from": ckpt_path,
        "bad_images": bad,
        "nonfinite_skipped": guard.skipped if guard else [],
    }


def stopped(stop: BaseException, cfg, trainer, datamodule, callbacks, output_dir) -> BaseException:
    """Record a run that stopped early (SIGTERM, non-finite loss) in `results.json`; returns
    what to raise: `Preempted` (exit status 143) or the NonFiniteLoss."""
    resume = next((c for c in callbacks if isinstance(c, ResumeCheckpoint)), None)
    saved = str(resume.path) if resume is not None and resume.path.is_file() else None
    preempted = isinstance(stop, SIGTERMException)
    write_results(
        output_dir,
        {
            "task_name": cfg.task_name,
            "status": record.Status.PREEMPTED if preempted else record.Status.NONFINITE_LOSS,
            "error": None if preempted else str(stop),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "resume_ckpt": saved,
            "train_time_s": train_time(callbacks),
            "provenance": provenance(cfg),
            **health(cfg.get("ckpt_path"), datamodule, callbacks),
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
    )
    if not preempted:
        return stop
    return Preempted(
        f"SIGTERM at global step {trainer.global_step}; "
        + (f"resume with ckpt_path={saved}" if saved else "no checkpoint written")
    )


def write_results(output_dir: Path, results: dict[str, Any]) -> Path:
    path = record.write_results(output_dir, results)
    log.info("results written to %s", path)
    return path
