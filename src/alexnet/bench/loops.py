"""The training step timed three ways on the same batches: a raw PyTorch loop, the Lightning
Trainer with our `Classifier` and the per-step callbacks of a real run, and the same with the
module's old per-step logging (the "naive" baseline: `train/loss` with
`prog_bar=True` every step, torchmetrics' argument checks and per-class averaging, and a
non-fused SGD, so the NaN guard reads the loss on the host -- host syncs on every step).

Batches are synthetic and already on the device, so only the step is measured. Each run does
`warmup` steps (compilation, cuDNN autotuning) and then times `steps` steps, synchronising the
device only at the two ends.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from alexnet.bench.timer import seconds_per_call, sync
from alexnet.config import CONF_DIR
from alexnet.config.entry import build_callbacks  # a real run's callbacks, not a copy
from alexnet.models import build_model
from alexnet.training.module import Classifier

# The paper's SGD (section 5); its settings do not change the speed, only make the step real.
# Fused (one kernel per step), as `optim.fused=true` in a run: it also lets the NaN guard skip a
# bad step on the device instead of syncing on every step (alexnet.training.nonfinite).
paper_sgd = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True)
unfused_sgd = functools.partial(paper_sgd, fused=None)


def synthetic_batches(
    count: int,
    batch_size: int,
    input_size: int,
    num_classes: int,
    device: torch.device,
    channels_last: bool,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` distinct (images, labels) batches on `device`, cycled through by the loops."""
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [
        (
            torch.randn(batch_size, 3, input_size, input_size, generator=gen)
            .mul_(50.0)
            .to(device)
            .contiguous(memory_format=fmt),
            torch.randint(0, num_classes, (batch_size,), generator=gen).to(device),
        )
        for _ in range(count)
    ]


class Cycle:
    """An iterable of `length` batches cycling through `batches` (what the Trainer reads)."""

    def __init__(self, batches: list, length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator:
        return (self.batches[i % len(self.batches)] for i in range(self.length))


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def build_net(model: dict, device: torch.device, channels_last: bool, compile: bool):
    """(module with the parameters, the callable to run: compiled or not)."""
    net = build_model(**model).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, (torch.compile(net) if compile else net)


def raw_loop(
    model: dict,
    batches: list,
    device: torch.device,
    precision: str,
    channels_last: bool,
    compile: bool,
    warmup: int,
    steps: int,
) -> float:
    """img/s of the plain loop: forward (autocast), cross-entropy, backward, SGD step."""
    net, run = build_net(model, device, channels_last, compile)
    net.train()
    optimizer = paper_sgd(net.parameters())

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        with _autocast(device, precision):
            loss = F.cross_entropy(run(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _time(step, device, warmup, steps) * len(batches[0][1])


def _time(step: Callable[[int], None], device: torch.device, warmup: int, steps: int) -> float:
    """Steps per second over `steps` steps after `warmup` ones."""
    return 1.0 / seconds_per_call(step, device, warmup, steps)


class NaiveClassifier(Classifier):
    """`Classifier` with its old per-step logging (the baseline of the Lightning row)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        num_classes = int(self.hparams.model["num_classes"])
        for k in (1, 5):  # torchmetrics' defaults: argument checks, per-class ("macro") average
            metric = MulticlassAccuracy(num_classes, top_k=min(k, num_classes))
            self.add_module(f"train_top{k}", metric)

    def _log_train_loss(self, loss: torch.Tensor) -> None:
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)


class StepTimer(L.Callback):
    """Times the steps after the first `warmup`, synchronising only at the two ends."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.last = warmup, warmup + steps - 1
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.last:
            sync(pl_module.device)
            self.end = time.perf_counter()


def lightning_loop(
    model: dict,
    batches: list,
    device: torch.device,
    precision: str,
    channels_last: bool,
    compile: bool,
    warmup: int,
    steps: int,
    naive: bool = False,
    progress_bar: bool = True,
) -> float:
    """img/s of the same step under `lightning.Trainer.fit`, with what a real run has around it:
    the CSV logger (every 50 steps) and the per-step callbacks `alexnet.train` gives a run
    (speed, images seen, the NaN guard, the progress bar refreshed every 20 steps, and
    `last.ckpt`'s callback, which records the RNG state before every batch; it writes only at
    the end, after the timed steps, where a run writes every 2000 steps)."""
    cls = NaiveClassifier if naive else Classifier
    optimizer = unfused_sgd if naive else paper_sgd
    module = cls(model=model, optimizer=optimizer, channels_last=channels_last, compile=compile)
    timer = StepTimer(warmup, steps)
    with tempfile.TemporaryDirectory() as logs:
        # a real run's callbacks (conf/callbacks), less the best checkpoint (validation is off)
        spec = OmegaConf.load(Path(CONF_DIR) / "callbacks" / "default.yaml")
        spec.checkpoint = None
        if not progress_bar:
            spec.progress_bar = None
        run = OmegaConf.create({"paths": {"output_dir": logs}, "callbacks": spec})
        callbacks = [timer, *build_callbacks(run)]
        trainer = L.Trainer(
            accelerator=device.type,
            devices=1,
            precision="bf16-mixed" if precision == "bf16" else "32-true",
            max_steps=warmup + steps,
            logger=CSVLogger(logs),
            log_every_n_steps=50,
            callbacks=callbacks,
            enable_checkpointing=True,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=logs,
        )
        trainer.fit(module, train_dataloaders=Cycle(batches, warmup + steps))
    return steps * len(batches[0][1]) / (timer.end - timer.start)
