"""Lightning callbacks of our own."""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

log = logging.getLogger(__name__)


class SpeedMonitor(L.Callback):
    """Training throughput in images per second, validation excluded.

    Times each epoch from its first training batch to its last one and synchronises the device
    only at those two points, so it adds no per-step host sync. Logs `train/img_per_s` per epoch;
    `img_per_s` holds the mean over epochs after the first (which pays for warm-up and
    compilation) or the first epoch's figure when there is only one.
    """

    def __init__(self) -> None:
        self.epoch_rates: list[float] = []
        self._images = 0
        self._start: float | None = None
        self._logged_epochs = 0
        self._replicas = 1

    def on_train_start(self, trainer, pl_module) -> None:
        # Under DDP each rank sees 1/replicas of every batch; count the whole global batch.
        sampler = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
        self._replicas = int(sampler.get("num_replicas", 1))

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._images, self._start = 0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            self._sync(pl_module)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1]) * self._replicas

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._close_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Validation ran already (it closed the timing); an epoch without one closes here.
        if self._close_epoch(trainer, pl_module) or self._logged_epochs < len(self.epoch_rates):
            pl_module.log("train/img_per_s", self.epoch_rates[-1], on_step=False, on_epoch=True)
            self._logged_epochs = len(self.epoch_rates)

    def _close_epoch(self, trainer, pl_module) -> bool:
        if self._start is None or not self._images:
            return False
        self._sync(pl_module)
        self.epoch_rates.append(self._images / max(time.perf_counter() - self._start, 1e-9))
        self._start = None
        return True

    @property
    def img_per_s(self) -> float | None:
        rates = self.epoch_rates[1:] or self.epoch_rates
        return sum(rates) / len(rates) if rates else None


class ImagesSeen(L.Callback):
    """Logs `train/images_seen`, the training images presented so far, at every epoch's end.

    Figure 1 of the paper measures how soon a net reaches 25% training error; in images seen that
    holds across batch sizes and dataset sizes. The count is kept in checkpoints, so a resumed run
    goes on counting.
    """

    def __init__(self) -> None:
        self.images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("train/images_seen", float(self.images), on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, int]:
        return {"images": self.images}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.images = int(state_dict.get("images", 0))


class RunEstimate(L.Callback):
    """Says, once the speed is known (after `measure` timed steps that follow `warmup`), how
    long the rest of the run's training will take at that speed, and how to try a short run.

    On a 2-core CPU the default recipe trains for hours; a newcomer should learn that in its
    first minute, not after it. Validation and test passes are not included in the estimate.
    """

    def __init__(self, warmup: int = 5, measure: int = 15) -> None:
        self.warmup, self.measure = warmup, measure
        self._seen = 0
        self._start: float | None = None
        self._images = 0
        self.estimate_s: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._seen += 1
        if self._seen == self.warmup:
            self._start, self._images = time.perf_counter(), 0
        elif self._start is not None and self.estimate_s is None:
            self._images += len(batch[1])
            if self._seen == self.warmup + self.measure:
                self._report(trainer, time.perf_counter() - self._start)

    def _report(self, trainer, seconds: float) -> None:
        steps_left = max(int(trainer.estimated_stepping_batches) - trainer.global_step, 0)
        per_step = seconds / self.measure
        self.estimate_s = steps_left * per_step
        if not trainer.is_global_zero:
            return
        img_s = self._images / max(seconds, 1e-9)
        log.info("speed: %.0f img/s on %s; the remaining %d training steps take about %s "
                 "(validation not included). For a short try: trainer.max_epochs=1, or "
                 "+trainer.max_steps=N", img_s, trainer.strategy.root_device.type, steps_left,
                 format_duration(self.estimate_s))


def format_duration(seconds: float) -> str:
    """`2 h 05 min`, `14 min`, `40 s`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min"
