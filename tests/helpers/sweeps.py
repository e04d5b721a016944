"""Helpers: sweep dirs laid out as Hydra and alexnet.train leave them, written directly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from omegaconf import OmegaConf

from alexnet.report.sweep import split_override

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def write_multirun(
    sweep: Path, params: dict[str, str], task: list[str], task_name: str = "lrn_pool"
) -> dict:
    """multirun.yaml with what the report reads of it (Hydra writes the whole config)."""
    multirun = {
        "task_name": task_name,
        "hydra": {
            "sweeper": {"_target_": BASIC_SWEEPER, "max_batch_size": None, "params": params},
            "overrides": {"task": task, "hydra": [f"hydra.sweep.dir={sweep}"]},
            "sweep": {"dir": str(sweep), "subdir": "${hydra:job.override_dirname}"},
        },
    }
    sweep.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(multirun), sweep / "multirun.yaml")
    return multirun


def config_of(
    overrides, model: dict | None = None, wandb: dict | None = None, task_name: str = "lrn_pool"
) -> dict:
    """The resolved config a job records: the model section from the overrides."""
    model = {
        "name": "alexnet_cifar",
        "lrn": True,
        "pool": "overlap",
        "towers": 2,
        "conv_width": 1.0,
        "activation": "relu",
        **(model or {}),
    }
    cfg = {
        "task_name": task_name,
        "model": model,
        "seed": 0,
        "logger": {"csv": True, "wandb": wandb},
        "trainer": {"max_epochs": 40},
    }
    for override in overrides:
        key, value = split_override(override)
        parts = key.split(".")
        node = cfg
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml_value(value)
    return cfg


def yaml_value(text: str):
    """An override's value typed as Hydra types it (``0`` int, ``True`` bool, ``0.5`` float)."""
    return OmegaConf.from_dotlist([f"v={text}"]).v


def write_curves(
    job_dir: Path,
    train_err: list[float],
    images_per_epoch: int = 45_000,
    val_err: list[float] | None = None,
) -> None:
    """csv/metrics.csv as Lightning's CSVLogger writes it: sparse rows, epoch and step."""
    rows = []
    steps = 10
    for e, err in enumerate(train_err):
        step = (e + 1) * steps - 1
        if val_err is not None:
            rows.append({"epoch": e, "step": step, "val/top1_err": val_err[e]})
        rows.append(
            {
                "epoch": e,
                "step": step,
                "train/top1_err": err,
                "train/images_seen": float((e + 1) * images_per_epoch),
            }
        )
    path = job_dir / "csv" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["epoch", "step", "train/images_seen", "train/top1_err", "val/top1_err"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_job(
    sweep: Path,
    overrides,
    status: str | None = "ok",
    metrics: dict | None = None,
    error: str | None = None,
    config: dict | None = None,
    epochs: int = 2,
    name: str | None = None,
) -> Path:
    """A job dir: .hydra/overrides.yaml, and results.json unless status is None (incomplete)."""
    job_dir = sweep / (name or ",".join(sorted(o.lstrip("+") for o in overrides)))
    (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(list(overrides)), job_dir / ".hydra" / "overrides.yaml")
    config = config or config_of(overrides)
    OmegaConf.save(OmegaConf.create(config), job_dir / ".hydra" / "config.yaml")
    if status is not None:
        results = {
            "task_name": config.get("task_name"),
            "status": status,
            "metrics": metrics or {},
            "epochs": epochs,
            "config": config,
        }
        if error:
            results["error"] = error
        (job_dir / "results.json").write_text(json.dumps(results))
    return job_dir
