"""Render the paper's figures for a checkpoint: `python -m alexnet.figures ckpt_path=PATH`.

The PNGs go to `<run dir>/figures/`, the run dir being the folder that holds the checkpoint's
`checkpoints/` folder (or the checkpoint's own folder when it is not in one), so they sit next to
the run they describe; `out_dir=...` puts them elsewhere. The learning curves come from the run's
`csv/metrics.csv` when it has one. With W&B configured (`logger.wandb`, offline unless logged in)
the figures are also logged to a new W&B run of job type `figures` in the training run's group.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from alexnet.config import CONF_DIR
from alexnet.config.entry import build_data, check_ckpt_path, one_line_errors
from alexnet.figures.render import FigureSet, RenderOptions, render_figures
from alexnet.training.module import Classifier

log = logging.getLogger(__name__)


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run directory of a checkpoint: the parent of its `checkpoints/` folder."""
    folder = Path(ckpt_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def training_config(run_dir: Path) -> dict[str, Any]:
    """The training run's resolved config: from `results.json`, else Hydra's `.hydra/config.yaml`,
    else empty (a checkpoint copied out of its run)."""
    results = run_dir / "results.json"
    if results.is_file():
        return json.loads(results.read_text()).get("config") or {}
    saved = run_dir / ".hydra" / "config.yaml"
    if saved.is_file():
        return OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
    return {}


def render_checkpoint(cfg: DictConfig) -> FigureSet:
    """All figures for `cfg.ckpt_path` (see the module docstring); returns what was written."""
    ckpt_path = Path(check_ckpt_path(cfg.ckpt_path))
    options = RenderOptions.from_config(cfg.figures).check()
    run_dir = run_dir_of(ckpt_path)
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else run_dir / "figures"
    datamodule = build_data(cfg)
    module = Classifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    figures = render_figures(
        module, datamodule, out_dir, options, metrics_csv=run_dir / "csv" / "metrics.csv"
    )
    wb = (cfg.get("logger") or {}).get("wandb")
    if wb:
        log_to_new_wandb_run(
            OmegaConf.to_container(wb, resolve=True),
            run_dir,
            ckpt_path,
            figures,
            OmegaConf.to_container(cfg, resolve=True),
        )
    for name, path in figures.paths.items():
        print(f"{name}: {path}")
    print(f"top-1 error over the scored test images: {figures.test_top1_err:.4f}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.seconds.items()))
    return figures


def log_to_new_wandb_run(
    spec: dict, run_dir: Path, ckpt_path: Path, figures: FigureSet, config: dict
) -> None:
    """A W&B run of job type `figures`, named and grouped after the training run, its files
    under `<run dir>/wandb/` beside the training run's."""
    import wandb

    from alexnet.training.figure_callbacks import log_figures
    from alexnet.training.tracking import start_wandb, wandb_identity, wandb_settings

    trained = training_config(run_dir)
    # The training run's own name and group (a copied-out checkpoint: task "figures").
    name, group, tags = wandb_identity(
        trained.get("task_name", "figures"),
        trained.get("tags") or [],
        run_dir,
        (trained.get("logger") or {}).get("wandb"),
    )

    def start(mode: str):
        return wandb.init(
            project=spec.get("project", "alexnet-lab"),
            entity=spec.get("entity"),
            name=f"{name}/figures",
            group=spec.get("group") or group,
            tags=[*tags, "figures"],
            job_type="figures",
            dir=str(run_dir),
            mode=mode,
            settings=wandb_settings(),
            config={**config, "ckpt_path": str(ckpt_path), "trained": trained},
        )

    # As training: offline, with a warning, when the server is unreachable or init times out.
    run = start_wandb(spec.get("mode", "auto"), start, run_dir)
    if run is None:  # mode disabled
        return
    try:
        log_figures(run, figures)
    finally:
        run.finish()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="figures")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    with one_line_errors():
        render_checkpoint(cfg)


if __name__ == "__main__":
    main()
