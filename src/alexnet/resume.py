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
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

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
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
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

    # -- what goes into every checkpoint (this one, and ModelCheckpoint's) --------------------
    def state_dict(self) -> dict[str, Any]:
        # Inside a batch (a non-finite loss stops the run there) the state to resume from is the
        # one before the batch; its forward pass has already drawn dropout masks.
        rng = self._rng_before_batch if self._rng_before_batch is not None else capture_rng()
        return {"rng": rng, "plateau_pending": list(self._plateau_pending)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.saved_step = trainer.global_step
        if self._restored is None:
            return
        restored, self._restored = self._restored, None
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
        self._rng_before_batch = None
        step = trainer.global_step
        due = self.every_n_steps and batch_idx > 0 and step % self.every_n_steps == 0
        if (due or self._save_at_next_batch) and step != self.saved_step \
                and not self._skip(trainer):
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
        self._plateau_pending = pending
        try:
            self.save(trainer)
        finally:
            self._plateau_pending = []

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
        return trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= \
            trainer.max_epochs

    # -- SIGTERM during validation waits for its end ---------------------------------------------
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx: int = 0) -> None:
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
