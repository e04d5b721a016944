"""bf16 autocast (what `trainer.precision: auto` picks on CPUs and GPUs with native bf16) trains
like fp32: the same network from the same init on the same batches follows the fp32 loss curve.

The band: over 200 SGD steps of the four-layer net (with LRN and the paper's init) on
class-coloured noise at lr 0.001, the loss averaged over each window of 20 steps stays within 0.05
of fp32's (2% of the starting loss, ln 10 = 2.30; the curves differed by at most 0.015 on the
machine this was written on), and both learn. (AlexNet-CIFAR, 15x the cost per image, is still on
its initial plateau after 100 steps at this rate, so it would test nothing here.)
bf16 keeps 8 bits of mantissa, so single steps differ from the start; where training goes must
not. At rates where fp32 itself spikes (0.003 here) two fp32 runs on different machines would
drift apart as much: such a rate tests chaos, not precision.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.nn import functional as F

from alexnet.config.hardware import resolve_auto
from alexnet.data.synthetic import make_images
from alexnet.models import build_model
from conftest import compose_config

WINDOW, BAND, LR = 20, 0.05, 0.001


def loss_curve(model_kwargs: dict, steps: int, bf16: bool, batch: int = 32) -> torch.Tensor:
    torch.manual_seed(0)
    net = build_model(**model_kwargs).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    images, labels = make_images(steps * batch, 32, 10, seed=1)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x_all = (x_all - x_all.mean(dim=0)).contiguous(memory_format=torch.channels_last)
    y_all = torch.from_numpy(labels)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    losses = []
    for step in range(steps):
        x, y = x_all[step * batch : (step + 1) * batch], y_all[step * batch : (step + 1) * batch]
        with autocast:
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses).view(-1, WINDOW).mean(dim=1)


# ~50 s on 2 cores (~110 s on busy ones): 2 x 200 SGD steps of the four-layer net, the band
# above is calibrated on that many steps
@pytest.mark.slow
def test_bf16_autocast_follows_the_fp32_loss_curve():
    model, steps = {"name": "four_layer", "lrn": True, "num_classes": 10}, 200
    fp32 = loss_curve(model, steps, bf16=False)
    bf16 = loss_curve(model, steps, bf16=True)
    assert (bf16 - fp32).abs().max() < BAND, (fp32, bf16)
    assert fp32[-1] < 1.5 and bf16[-1] < 1.5  # both learned (chance: ln 10 = 2.30)


def test_auto_precision_resolves_to_what_the_machine_runs(monkeypatch, tmp_path):
    import alexnet.config.hardware as hardware

    cfg = compose_config("train", ["trainer.accelerator=cpu"], tmp_path)
    assert cfg.trainer.precision == "auto" and cfg.channels_last == "auto"
    monkeypatch.setattr(hardware, "native_bf16", lambda device: True)
    resolved = resolve_auto(cfg.copy())
    assert resolved.trainer.precision == "bf16-mixed" and resolved.channels_last is True
    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)
    resolved = resolve_auto(cfg.copy())
    assert resolved.trainer.precision == "32-true" and resolved.channels_last is False
    # an explicit choice is kept
    pinned = resolve_auto(
        compose_config("train", ["trainer.precision=32-true", "channels_last=true"], tmp_path)
    )
    assert pinned.trainer.precision == "32-true" and pinned.channels_last is True
