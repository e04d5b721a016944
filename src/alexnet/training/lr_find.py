"""`lr_find=true`: Lightning's learning-rate range test instead of a training run.

From the run's initial weights, the learning rate grows exponentially from `MIN_LR` to `MAX_LR`
over `STEPS` training steps (stopping early once the smoothed loss exceeds four times its best);
the suggestion is the rate where the loss falls fastest. The run then stops: the suggestion is a
heuristic read off a hundred noisy steps, so it is written down for a person to check against the
plot, not trained with unseen (docs/ablations.md#finding-a-learning-rate). Into the run dir:

- `lr_find.png`: loss against learning rate, the suggestion marked;
- `lr_find.json`: the suggestion, the configured rate beside it, the range and the curve.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# Six decades around SGD's usual rates (the paper's 0.01 sits in the middle); Lightning's own
# default starts at 1e-8, where a third of the steps would see no change in the loss.
MIN_LR, MAX_LR, STEPS = 1e-6, 1.0, 100
PLOT, RECORD = "lr_find.png", "lr_find.json"


def find_lr(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    output_dir: Path,
    configured_lr: float | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the range test on `trainer` (no loggers or callbacks of the run's own) and write the
    plot and the record on rank zero; returns the record. The module's weights are restored."""
    finder = Tuner(trainer).lr_find(
        module,
        datamodule=datamodule,
        min_lr=MIN_LR,
        max_lr=MAX_LR,
        num_training=STEPS,
        update_attr=False,
    )
    if finder is None:  # Lightning skips it under fast_dev_run (validate_config refuses that)
        raise RuntimeError("the learning rate finder did not run")
    suggestion = finder.suggestion()
    record = {
        "suggested_lr": suggestion,
        "configured_lr": configured_lr,
        "min_lr": MIN_LR,
        "max_lr": MAX_LR,
        "steps": len(finder.results["lr"]),
        "lr": list(finder.results["lr"]),
        # NaN (a diverged step) is not JSON; null keeps the file readable everywhere
        "loss": [loss if math.isfinite(loss) else None for loss in finder.results["loss"]],
        "plot": PLOT,
        "provenance": provenance,
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        _save_plot(finder, output_dir / PLOT)
        (output_dir / RECORD).write_text(json.dumps(record, indent=2))
        if suggestion is None:
            log.warning(
                "lr_find: no suggestion (the loss diverged after too few steps); see %s",
                output_dir / PLOT,
            )
        else:
            log.info(
                "lr_find: suggested optim.lr=%.3g (configured: %s); check %s, then train with "
                "optim.lr=%.3g",
                suggestion,
                configured_lr,
                output_dir / PLOT,
                suggestion,
            )
    return record


def _save_plot(finder, path: Path) -> None:
    fig = Figure(figsize=(6.4, 4.8))  # no pyplot: nothing opens a window or picks a backend
    ax = fig.add_subplot()
    finder.plot(suggest=True, ax=ax)
    ax.set_title("learning rate range test (red: the suggestion)")
    fig.savefig(path, dpi=100)
