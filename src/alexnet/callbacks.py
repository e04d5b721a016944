"""Lightning callbacks of our own."""

from __future__ import annotations

import time

import lightning as L
import torch


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
