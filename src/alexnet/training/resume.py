"""`checkpoints/last.ckpt`: everything a run needs to continue exactly where it stopped.

`ResumeCheckpoint` writes it every `every_n_steps` optimizer steps, at every epoch end, when the
process gets SIGTERM (what SLURM and cloud schedulers send before killing a job) and when a run
stops on a non-finite loss. Lightning's own checkpoint already holds the weights, the optimizer,
the schedulers and the loop counters; the data module adds the training order (alexnet.data.order)
and this callback adds what is still missing for a bit-identical continuation:

- the RNG states of torch (CPU and CUDA), numpy and Python, restored when training starts — after
  Lightning has set up its loaders, so that nothing drawn during setup shifts them;
- ReduceLROnPlateau steps that Lightning 2.6 loses across a restart: it steps plateau schedulers
  after `on_train_epoch_end` (where epoch-end checkpoints are written) and never for the epoch a
  run was restarted in. Both are done here (see `_plateau_steps`).

Step checkpoints are written at the start of a batch, so the state is that of a clean boundary
(the previous batch and any validation after it are complete). The file is written under a
temporary name in the same folder and renamed, so a SIGKILL during a save leaves the previous
`last.ckpt` intact.

SIGTERM: Lightning 2.6 (outside SLURM too) notes the signal and raises `SIGTERMException` at the
end of the current batch; this callback then saves. A SIGTERM that arrives during validation is
held back until validation ends, so a checkpoint never holds half an evaluation.
"""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from alexnet.training.tracking import ResumableCSVLogger

log = logging.getLogger(__name__)
# Logged once per epoch, after every callback's epoch-end hook (alexnet.training.module).
EPOCH_END_METRIC = "train/top1_err"

# Lightning warns on a mid-epoch resume unless the DataLoader object itself is stateful; ours
# resumes through the data module's state (alexnet.data.order), so the warning would mislead.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")


class CleanStop(RuntimeError):
    """Raised where the training state is consistent; `ResumeCheckpoint` saves it before the run
    ends and sets `checkpoint` to the file it wrote."""

    checkpoint: str | None = None


class Preempted(SIGTERMException):
    """SIGTERM stopped the run after its checkpoint was written: exit status 143 (128 + SIGTERM),
    so that `train && next-step` does not go on and a requeue loop sees an unfinished job."""

    def __init__(self, message: str) -> None:
        super().__init__(143)
        self.message = message


# --------------------------------------------------------------------------------------------
# RNG states as plain tensors and numbers, so that weights_only loading accepts them
# --------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------------------------------
# The callback
# --------------------------------------------------------------------------------------------


class ResumeCheckpoint(Checkpoint):
    """Keeps `<dirpath>/last.ckpt` current; restores RNG and plateau state on resume.

    `every_n_steps=0` writes at epoch ends (and on SIGTERM / non-finite loss) only.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int = 0) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps={every_n_steps} must be >= 0 (0: epoch ends only)")
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.saved_step = -1
        self._rng_before_batch: dict[str, Any] | None = None
        self._plateau_pending: list[tuple[int, float]] = []
        self._restored: dict[str, Any] | None = None
        self._held_sigterm = False
        self._save_at_next_batch = False
        self._trainer: L.Trainer | None = None
        self._epoch_end_save = -1  # the epoch whose end is being saved, else -1
        self._time_before = 0.0  # training seconds of the attempts this run resumed
        self._started: float | None = None
        self._logging_step: int | None = None  # the loggers' step to restore on resume

    # -- what goes into every checkpoint (this one, and ModelCheckpoint's) --------------------
    def state_dict(self) -> dict[str, Any]:
        # Inside a batch (a non-finite loss stops the run there) the state to resume from is the
        # one before the batch; its forward pass has already drawn dropout masks.
        rng = self._rng_before_batch if self._rng_before_batch is not None else capture_rng()
        loop = self._trainer.fit_loop.epoch_loop if self._trainer is not None else None
        module = self._trainer.lightning_module if self._trainer is not None else None
        metrics = getattr(module, "train_metric_state", None)
        return {
            "rng": rng,
            "plateau_pending": list(self._plateau_pending),
            "train_metrics": metrics() if metrics is not None else None,
            "train_time_s": self.train_time_s(),
            **self._csv_state(),
            "batches_that_stepped": loop._batches_that_stepped if loop else None,
            "wandb_id": self._wandb_id(),
        }

    def _wandb_id(self) -> str | None:
        """The W&B run's id, so that a resumed training continues that run (tracking)."""
        trainer = self._trainer
        for logger in trainer.loggers if trainer is not None else []:
            if isinstance(logger, WandbLogger):
                return str(logger.version)
        return None

    def train_time_s(self) -> float:
        """Seconds spent training, summed over this attempt and those it resumed."""
        now = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._time_before + now

    # -- csv/metrics.csv follows the checkpoint (tracking.ResumableCSVLogger) -----------------
    def _csv_loggers(self) -> list[ResumableCSVLogger]:
        trainer = self._trainer
        if trainer is None or not trainer.is_global_zero:
            return []
        return [lg for lg in trainer.loggers if isinstance(lg, ResumableCSVLogger)]

    def _csv_state(self) -> dict[str, int]:
        loggers = self._csv_loggers()
        if not loggers:
            return {}
        return {"csv_rows": loggers[0].rows_written(), "csv_epoch_end": self._epoch_end_save}

    def _restart_csv(self, restored: dict[str, Any] | None) -> None:
        restored = restored or {}
        epoch_end = int(restored.get("csv_epoch_end", -1))

        def logged_at_that_epoch_end(row: dict[str, str]) -> bool:
            # A checkpoint written at an epoch's end precedes the epoch's own train metrics,
            # which Lightning logs after every callback; a run resumed from it starts the next
            # epoch and never logs them again, so they stay.
            return (
                epoch_end >= 0
                and row.get("epoch") == str(epoch_end)
                and bool(row.get(EPOCH_END_METRIC))
            )

        for logger in self._csv_loggers():
            logger.restart(int(restored.get("csv_rows", 0)), logged_at_that_epoch_end)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.saved_step = trainer.global_step
        self._started = time.perf_counter()
        self._restart_csv(self._restored)
        if self._restored is None:
            return
        restored, self._restored = self._restored, None
        self._time_before = float(restored.get("train_time_s", 0.0))
        self._logging_step = restored.get("batches_that_stepped")
        if restored.get("train_metrics") and hasattr(pl_module, "load_train_metric_state"):
            # the errors of the batches this epoch trained before the checkpoint
            pl_module.load_train_metric_state(restored["train_metrics"])
        for index, value in restored.get("plateau_pending", []):
            self._step_plateau(trainer, index, value)
        if "rng" in restored:
            restore_rng(restored["rng"])

    # -- when to write --------------------------------------------------------------------------
    def _skip(self, trainer: L.Trainer) -> bool:
        return bool(trainer.fast_dev_run) or trainer.sanity_checking

    def save(self, trainer: L.Trainer) -> str:
        # Lightning stages files in the system temp dir and moves them, which is a copy (not
        # atomic) when that is another filesystem; a rename within the folder always is.
        partial = self.path.with_name(f".{self.path.name}.partial")
        trainer.save_checkpoint(partial, weights_only=False)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        self.saved_step = trainer.global_step
        log.info("resume checkpoint written: %s (step %d)", self.path, trainer.global_step)
        return str(self.path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._logging_step is not None:
            # Lightning assumes a mid-epoch checkpoint was written at a batch's end and adds one
            # to the step its loggers write on restart; ours are written at a batch's start.
            trainer.fit_loop.epoch_loop._batches_that_stepped = int(self._logging_step)
            self._logging_step = None
        self._rng_before_batch = None
        step = trainer.global_step
        due = self.every_n_steps and batch_idx > 0 and step % self.every_n_steps == 0
        if (
            (due or self._save_at_next_batch)
            and step != self.saved_step
            and not self._skip(trainer)
        ):
            self.save(trainer)
        self._save_at_next_batch = False
        self._rng_before_batch = capture_rng()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._rng_before_batch = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending = self._plateau_steps(trainer)
        if trainer.fit_loop.restarting:
            # Lightning skips plateau steps at the end of an epoch it was restarted in.
            for index, value in pending:
                self._step_plateau(trainer, index, value)
            pending = []
        if self._skip(trainer):
            return
        if trainer.max_steps != -1 and not self._last_epoch(trainer):
            # Resumed from an epoch end, a step-limited (max_steps) run replays an empty epoch in
            # Lightning 2.6, shifting every later epoch; so such runs write the epoch boundary at
            # the first batch of the next epoch, which resumes like any mid-epoch checkpoint.
            self._save_at_next_batch = True
            return
        # Lightning will step these after this hook; a run resumed from here does it on start.
        self._plateau_pending, self._epoch_end_save = pending, trainer.current_epoch
        try:
            self.save(trainer)
        finally:
            self._plateau_pending, self._epoch_end_save = [], -1

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException | CleanStop) and not self._skip(trainer):
            path = self.save(trainer)
            if isinstance(exception, CleanStop):
                exception.checkpoint = path

    @staticmethod
    def _last_epoch(trainer: L.Trainer) -> bool:
        """Whether fit stops after this epoch (what is written now is the final state)."""
        if trainer.should_stop:
            return True
        if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
            return True
        return (
            trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        )

    # -- SIGTERM during validation waits for its end ---------------------------------------------
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0
    ) -> None:
        connector = trainer._signal_connector
        if trainer.state.fn == "fit" and connector.received_sigterm:
            connector.received_sigterm, self._held_sigterm = False, True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._held_sigterm:
            trainer._signal_connector.received_sigterm, self._held_sigterm = True, False

    # -- ReduceLROnPlateau ----------------------------------------------------------------------
    @staticmethod
    def _plateau_steps(trainer: L.Trainer) -> list[tuple[int, float]]:
        """The (scheduler index, metric) steps Lightning takes at the end of this epoch."""
        steps = []
        for index, config in enumerate(trainer.lr_scheduler_configs):
            due = (trainer.current_epoch + 1) % config.frequency == 0
            if config.reduce_on_plateau and config.interval == "epoch" and due:
                value = trainer.callback_metrics.get(config.monitor)
                if value is not None:
                    steps.append((index, float(value)))
        return steps

    @staticmethod
    def _step_plateau(trainer: L.Trainer, index: int, value: float) -> None:
        config = trainer.lr_scheduler_configs[index]
        trainer.lightning_module.lr_scheduler_step(config.scheduler, value)


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose standings survive a resume into a new run directory.

    Lightning 2.6 restores `best_model_score` and the top-k list only when the checkpoint folder
    is unchanged; a resumed run (Hydra gives it a new folder) would call its first validation
    the best whatever its score, and test that checkpoint at the end. Here the previous run's
    standings are adopted. Its files stay referenced (tested if nothing better comes) and are
    never deleted: only files in this run's own folder are removed when a better one arrives.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({**state_dict, "dirpath": self.dirpath})

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if Path(filepath).parent == Path(self.dirpath):
            super()._remove_checkpoint(trainer, filepath)
