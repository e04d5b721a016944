"""A NaN or infinite training loss: stop, or skip the batch (`callbacks.nonfinite.mode`).

- `stop` (default): stop the run with a one-line `NonFiniteLoss` naming the step, with no update
  from that step in the weights; `ResumeCheckpoint` writes them to `last.ckpt` and the message
  names that file.
- `skip`: leave the weights as they were before the batch. SGD leaves parameters without a
  gradient untouched (no update, no weight decay, no momentum change); the step counter and the
  schedulers still advance. Skipped steps are logged and listed in `results.json`.
- `callbacks.nonfinite=null`: no check (the guard is not attached).

Two ways to keep a step out of the weights, chosen per step:

- On the host (any optimizer): read `isfinite(loss)` on every step, one device sync, and raise
  (`stop`) or drop the gradients (`skip`) before the optimizer step. `stop` then happens at the
  bad step itself and `last.ckpt` is the state before it.
- On the device, for fused optimizers (`optim.fused=true`; torch's fused SGD/Adam/AdamW take a
  `found_inf` flag and skip the whole update, momentum and weight decay included, when it is 1,
  as they do for AMP's gradient scaler): the flag is set from the loss on the device and nothing
  waits for the GPU. The host reads the flags every `trainer.log_every_n_steps` steps (when
  Lightning syncs to log anyway), at epoch ends and at the end. `skip` is then free; `stop`
  stops at the first batch start after the bad step is seen, so the finite steps between are in
  the weights and the bad one is not. The first optimizer step of a run always takes the host
  path: a fused optimizer that skipped its first step would leave its momentum uninitialised.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import lightning as L
import torch

from alexnet.training.resume import CleanStop

log = logging.getLogger(__name__)

MODES = ("stop", "skip")


class NonFiniteLoss(CleanStop):
    """The training loss became NaN or infinite; nothing of that step reached the weights."""

    def __init__(self, value: float, step: int, epoch: int, batch: int) -> None:
        super().__init__(value, step, epoch, batch)
        self.value, self.step, self.epoch, self.batch = value, step, epoch, batch
        # The global step it stopped at, when later than `step` (a fused optimizer's flag,
        # read on the host after the fact; set by the guard when it raises).
        self.stopped_at: int | None = None

    def __str__(self) -> str:
        where = (
            f"train/loss is {self.value} at global step {self.step} (epoch {self.epoch}, "
            f"batch {self.batch})"
        )
        if self.stopped_at is None:
            saved = (
                f"; the weights before it are saved in {self.checkpoint} (resume with "
                f"ckpt_path={self.checkpoint})"
                if self.checkpoint
                else ""
            )
        else:
            where += f"; its update was skipped and the run stopped at step {self.stopped_at}"
            saved = (
                f"; the weights are saved in {self.checkpoint} (resume with "
                f"ckpt_path={self.checkpoint})"
                if self.checkpoint
                else ""
            )
        return (
            f"{where}{saved}; lower optim.lr, check the data, or set "
            f"callbacks.nonfinite.mode=skip to skip such batches"
        )


@dataclass
class _Flag:
    """One step's finiteness (any of its accumulated batches), still on the device."""

    step: int
    epoch: int
    batch: int
    bad: torch.Tensor  # 0-d: bool, then float32 once agreed across ranks
    loss: torch.Tensor  # 0-d


def any_rank(bad: torch.Tensor) -> torch.Tensor:
    """1.0 where any rank's flag is 1.0 (float32, 0-d). Under DDP a NaN on one rank reaches
    every rank's gradients through the all-reduce while the other ranks' losses stay finite, so
    all must skip or stop together. The all-reduce is queued like any other: no host sync."""
    bad = bad.float()
    if (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    return bad


def _skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` honours `found_inf` (torch's fused optimizers) and has taken a step."""
    return bool(optimizer.state) and all(g.get("fused") for g in optimizer.param_groups)


class NonFiniteGuard(L.Callback):
    def __init__(self, mode: str = "stop") -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is unknown; choose one of {', '.join(MODES)}")
        self.mode = mode
        self.skipped: list[int] = []  # global steps whose batch was skipped
        self._drop_grads = False
        self._bad: _Flag | None = None  # this step's, for the fused optimizer (device path)
        self._pending: list[_Flag] = []  # device flags the host has not read yet
        self._stop: NonFiniteLoss | None = None  # a bad step read, to stop at the next batch

    @staticmethod
    def _optimizer(trainer) -> torch.optim.Optimizer | None:
        optimizers = trainer.optimizers
        return optimizers[0] if len(optimizers) == 1 else None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch
        batch = trainer.fit_loop.epoch_loop.batch_idx
        optimizer = self._optimizer(trainer)
        bad = ~torch.isfinite(loss.detach()).all()
        if optimizer is not None and _skips_on_device(optimizer):
            if self._bad is None:
                self._bad = _Flag(step, epoch, batch, bad, loss.detach())
            else:  # accumulated batches: any of them
                self._bad.bad = self._bad.bad | bad
            return
        if not bool(any_rank(bad)):  # the host path: one sync per step
            return
        value = float(loss.detach().float().flatten()[0])
        value = value if not math.isfinite(value) else math.nan  # the bad loss was another rank's
        if self.mode == "stop":
            raise NonFiniteLoss(value, step, epoch, batch)
        self._skip(value, step, epoch, batch)
        self._drop_grads = True

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._bad is not None:
            flag, self._bad = self._bad, None
            flag.bad = any_rank(flag.bad)
            # Read by the fused kernels when the optimizer steps: 1 skips the whole update.
            optimizer.found_inf = flag.bad
            self._pending.append(flag)
        elif getattr(optimizer, "found_inf", None) is not None:
            optimizer.found_inf = None  # a flag left from an earlier step must not apply here
        if self._drop_grads:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None
            self._drop_grads = False

    def _skip(self, value: float, step: int, epoch: int, batch: int) -> None:
        log.warning(
            "train/loss is %s at global step %d (epoch %d, batch %d): batch skipped",
            value,
            step,
            epoch,
            batch,
        )
        self.skipped.append(step)

    def _read(self) -> None:
        """Read the pending device flags (one sync); record skips, or the stop to make."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        bad = torch.stack([f.bad for f in pending]).tolist()
        for flag, is_bad in zip(pending, bad, strict=True):
            if not is_bad:
                continue
            value = float(flag.loss.float().flatten()[0])
            value = value if not math.isfinite(value) else math.nan  # another rank's loss
            if self.mode == "skip":
                self._skip(value, flag.step, flag.epoch, flag.batch)
            elif self._stop is None:
                self.skipped.append(flag.step)
                self._stop = NonFiniteLoss(value, flag.step, flag.epoch, flag.batch)

    def _raise_if_stopping(self, trainer) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop.stopped_at = trainer.global_step  # where it is raised, after the bad step
            raise stop

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # A batch start is where the training state is consistent to save (ResumeCheckpoint
        # writes there too); the flags are read when Lightning syncs to log anyway.
        if self._pending and trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self._read()
        self._raise_if_stopping(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._read()  # a stop waits for the next batch start (or the end of training)

    def on_train_end(self, trainer, pl_module) -> None:
        self._read()
        self._raise_if_stopping(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, NonFiniteLoss):
            self._read()  # results.json lists what was skipped before, e.g., SIGTERM
