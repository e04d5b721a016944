"""A NaN or infinite training loss: stop, or skip the batch (`callbacks.nonfinite`).

- `stop` (default): raise `NonFiniteLoss` before the backward pass, so the weights are still those
  that produced a finite loss; `ResumeCheckpoint` writes them (with the state before this batch)
  to `last.ckpt`, and the one-line error names the step and that file.
- `skip`: drop the batch's gradients before the optimizer step. SGD leaves parameters without a
  gradient untouched (no update, no weight decay, no momentum change); the step counter and the
  schedulers still advance. Skipped steps are logged and listed in `results.json`.
- `off`: no check.

The check reads the loss on the host every step (`bool(isfinite(loss))`, one device sync): on
a GPU that costs a little throughput, which `off` saves.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from alexnet.resume import CleanStop

log = logging.getLogger(__name__)

MODES = ("stop", "skip", "off")


class NonFiniteLoss(CleanStop):
    """The training loss became NaN or infinite; nothing of that step reached the weights."""

    def __init__(self, value: float, step: int, epoch: int, batch: int) -> None:
        super().__init__(value, step, epoch, batch)
        self.value, self.step, self.epoch, self.batch = value, step, epoch, batch

    def __str__(self) -> str:
        saved = (f"; the weights before it are saved in {self.checkpoint} (resume with "
                 f"ckpt_path={self.checkpoint})" if self.checkpoint else "")
        return (f"train/loss is {self.value} at global step {self.step} (epoch {self.epoch}, "
                f"batch {self.batch}){saved}; lower optim.lr, check the data, or set "
                f"callbacks.nonfinite=skip to skip such batches")


class NonFiniteGuard(L.Callback):
    def __init__(self, mode: str = "stop") -> None:
        if mode not in MODES:
            raise ValueError(f"callbacks.nonfinite={mode!r} is unknown; choose one of {MODES}")
        self.mode = mode
        self.skipped: list[int] = []  # global steps whose batch was skipped
        self._drop_grads = False

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if self.mode == "off" or bool(torch.isfinite(loss.detach()).all()):
            return
        step, value = trainer.global_step, float(loss.detach().float().flatten()[0])
        epoch, batch = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx
        if self.mode == "stop":
            raise NonFiniteLoss(value, step, epoch, batch)
        log.warning("train/loss is %s at global step %d (epoch %d, batch %d): batch skipped",
                    value, step, epoch, batch)
        self.skipped.append(step)
        self._drop_grads = True

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._drop_grads:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None
            self._drop_grads = False
