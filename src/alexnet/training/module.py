"""The LightningModule: cross-entropy, top-1/top-5 error, SGD and its schedule (paper section 5).

The network is rebuilt from `model`, a plain dict (`{"name": "alexnet", "lrn": True, ...}`), so a
checkpoint's hyper-parameters alone bring it back: `Classifier.load_from_checkpoint(path)` needs no
config files. The optimizer and scheduler arrive as factories (Hydra partials) and are not stored:
they matter for training, which always goes through the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from alexnet.models import build_model
from alexnet.models.dense import dense_posteriors

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def _accuracy(num_classes: int, k: int) -> MulticlassAccuracy:
    """Top-k accuracy as the paper counts errors: the fraction of images (micro average).

    `validate_args=False` and "micro" keep `update` free of host syncs: the argument checks call
    `torch.unique` and the per-class ("macro") path `torch.bincount`, both of which wait for the
    GPU on every training step.
    """
    return MulticlassAccuracy(
        num_classes, top_k=min(k, num_classes), average="micro", validate_args=False
    )


class Classifier(L.LightningModule):
    def __init__(
        self,
        model: Mapping[str, Any],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.channels_last = channels_last
        self.net: nn.Module = build_model(**dict(model))
        # Kept outside the module tree so the state dict holds the weights once, under `net.`.
        object.__setattr__(self, "forward_net", torch.compile(self.net) if compile else self.net)
        num_classes = int(model["num_classes"])
        for stage in ("train", "val", "test"):
            for k in (1, 5):
                setattr(self, f"{stage}_top{k}", _accuracy(num_classes, k))
        # train/loss is summed on the device and logged at the logger's cadence (_log_train_loss).
        self._loss_sum: torch.Tensor | None = None
        self._loss_steps = 0

    def forward(self, x: torch.Tensor | list) -> torch.Tensor:
        """Logits for (N, C, H, W) input; for (N, crops, C, H, W) input (ten-crop testing) the
        log of the softmax averaged over the crops, as the paper averages predictions; for a list
        of whole images of any sizes (VGG's dense evaluation) the log of their dense posteriors."""
        if isinstance(x, (list, tuple)):
            return dense_posteriors(self.net, x).clamp_min(1e-12).log()
        if x.ndim == 5:
            n, crops = x.shape[:2]
            logits = self._net(x.flatten(0, 1))
            probs = logits.float().softmax(dim=1).view(n, crops, -1).mean(dim=1)
            return probs.clamp_min(1e-12).log()
        return self._net(x)

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.forward_net(x)

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    # -- steps -------------------------------------------------------------------------------
    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        plain = torch.is_tensor(x) and x.ndim == 4  # else forward returned log-posteriors
        loss = F.cross_entropy(logits.float(), y) if plain else F.nll_loss(logits, y)
        top1, top5 = getattr(self, f"{stage}_top1"), getattr(self, f"{stage}_top5")
        top1.update(logits.detach(), y)
        top5.update(logits.detach(), y)
        if stage == "train":
            self._log_train_loss(loss)
        else:
            # sync_dist: under DDP the epoch's loss is the mean over every rank's images (one
            # reduction per epoch, none per step).
            self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def _log_train_loss(self, loss: torch.Tensor) -> None:
        """Log `train/loss`, the mean over the steps since the last log, only on the steps whose
        logs Lightning writes (every `trainer.log_every_n_steps`).

        Why not `self.log(..., prog_bar=True)` every step: Lightning turns progress-bar values
        into Python numbers after every batch, a host-device sync per step (with the Python work
        of `self.log`, -15% img/s against a raw loop on an H100). Here the sum stays on the
        device, and the logger's own conversion, once per `log_every_n_steps`, is the only sync.
        """
        loss = loss.detach()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_steps += 1
        every = self.trainer.log_every_n_steps
        if every and (self.trainer.global_step + 1) % every == 0:
            self.log("train/loss", self._loss_sum / self._loss_steps, on_step=True, on_epoch=False)
            self._loss_sum, self._loss_steps = None, 0

    def _log_errors(self, stage: str) -> None:
        for k in (1, 5):
            metric = getattr(self, f"{stage}_top{k}")
            self.log(f"{stage}/top{k}_err", 1.0 - metric.compute(), prog_bar=stage == "val")
            metric.reset()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        # The epoch's rate (schedulers step after this hook); logged here rather than at the
        # epoch's start, which Lightning skips in an epoch a run resumed in.
        if self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        self._log_errors("train")

    # -- the training errors accumulated so far in an epoch (a mid-epoch checkpoint keeps them) --
    def train_metric_state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {
            f"train_top{k}": {
                name: value.detach().clone()
                for name, value in getattr(self, f"train_top{k}").metric_state.items()
            }
            for k in (1, 5)
        }

    def load_train_metric_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, values in state.items():
            metric = getattr(self, name)
            for key, value in values.items():
                setattr(metric, key, value.to(metric.device))
            metric._update_count = 1  # compute() then reads the states without a warning

    def on_validation_epoch_end(self) -> None:
        self._log_errors("val")

    def on_test_epoch_end(self) -> None:
        self._log_errors("test")

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("Classifier needs an optimizer factory to train (conf/optim)")
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # The paper divides the rate by 10 "when the validation error rate stopped improving".
            config["monitor"] = "val/top1_err"
        return {"optimizer": optimizer, "lr_scheduler": config}
