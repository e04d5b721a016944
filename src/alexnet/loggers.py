"""CSV and W&B loggers for a run directory; W&B never waits on the network unless asked to."""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

# Lower is better for these; W&B's summary shows their best value, not the last one.
MIN_SUMMARY_METRICS = ("val/top1_err", "val/top5_err")
STEP_METRIC = "trainer/global_step"  # WandbLogger's x-axis


def logged_in_to_wandb() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(requested: str = "auto") -> str:
    """`auto` means online only when the user is logged in; WANDB_MODE, when set, wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested == "auto":
        return "online" if logged_in_to_wandb() else "offline"
    return requested


def build_loggers(
    spec: Mapping[str, Any] | None,
    output_dir: Path,
    name: str,
    tags: list[str],
    config: Mapping[str, Any],
    group: str | None = None,
) -> list[Logger]:
    """`spec` is conf/logger: {"csv": bool, "wandb": {"project", "group", "name", "mode"} | None}.

    CSV goes to `<output_dir>/csv/metrics.csv`; W&B to `<output_dir>/wandb/`, with the resolved
    config as the run config and the validation errors summarised as their minimum. `group` is
    the W&B group unless the spec names one.
    """
    spec = spec or {}
    loggers: list[Logger] = []
    if spec.get("csv"):
        loggers.append(CSVLogger(save_dir=output_dir, name="csv", version=""))
    wb = spec.get("wandb")
    if wb:
        from lightning.pytorch.loggers import WandbLogger

        mode = wandb_mode(wb.get("mode", "auto"))
        if mode != "disabled":
            logger = WandbLogger(
                project=wb.get("project", "alexnet-lab"),
                name=wb.get("name") or name,
                group=wb.get("group") or group,
                tags=list(tags),
                save_dir=str(output_dir),
                mode=mode,
            )
            logger.log_hyperparams(dict(config))
            define_summaries(logger.experiment)
            loggers.append(logger)
    return loggers


def define_summaries(run) -> None:
    """Summarise the validation errors as their minimum (the best epoch), on Lightning's x-axis
    (a metric defined by name no longer follows WandbLogger's `*` definition, so it says so)."""
    for name in MIN_SUMMARY_METRICS:
        run.define_metric(name, step_metric=STEP_METRIC, step_sync=True, summary="min")


def finish_wandb() -> None:
    """End the W&B run so the next job of a multirun starts its own."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return
    if wandb.run is not None:
        wandb.finish()
