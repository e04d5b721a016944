"""The machine a run executes on: what it computes fast (the `auto` settings) and how a result
names it.

`trainer.precision: auto` and `channels_last: auto` (the defaults of `make train` and every
recipe that does not pin them) are resolved here, before anything is built:

- precision `auto` is `bf16-mixed` where the device computes bf16 natively -- a CUDA GPU that
  supports it, or a CPU with AVX512-BF16 or AMX (oneDNN's check) -- and `32-true` elsewhere.
  Measured on a 2-core AMD EPYC (docs/speed.md, `make bench`): bf16 autocast with channels_last
  trains the four-layer net and AlexNet-CIFAR about 2x faster than fp32;
  `tests/config/test_precision.py` checks that bf16 training follows the fp32 loss curve.
- `channels_last: auto` is true when the precision is a bf16 one (the layout oneDNN and cuDNN
  run bf16 convolutions in) and false otherwise.

`describe()` is the device line a `results.json` records: the GPU's name, or the CPU's model and
the number of threads torch uses.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

AUTO = "auto"


def accelerator_type(accelerator: str | None) -> str:
    """`cuda` or `cpu`: where a Trainer with this `accelerator` setting will run."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator in (None, AUTO):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(accelerator)


def native_bf16(device_type: str) -> bool:
    """Whether `device_type` computes bf16 matrix products in hardware."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    return False


def auto_precision(device_type: str) -> str:
    return "bf16-mixed" if native_bf16(device_type) else "32-true"


def resolve_auto(cfg: DictConfig) -> DictConfig:
    """Replace `auto` in `trainer.precision` and `channels_last` by what this machine runs fast,
    in place (so `results.json` records what ran); returns `cfg`."""
    trainer = cfg.get("trainer")
    with open_dict(cfg):
        if trainer is not None and trainer.get("precision") == AUTO:
            trainer.precision = auto_precision(accelerator_type(trainer.get("accelerator")))
        if cfg.get("channels_last") == AUTO:
            precision = str(trainer.get("precision")) if trainer is not None else ""
            cfg.channels_last = precision.startswith("bf16")
    return cfg


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device_type: str) -> str:
    """One line naming the device: `NVIDIA H100 80GB HBM3` or `AMD EPYC 9B14, 2 threads`."""
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


__all__ = ["AUTO", "accelerator_type", "auto_precision", "describe", "native_bf16", "resolve_auto"]
