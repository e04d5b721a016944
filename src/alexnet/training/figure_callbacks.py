"""The figures a run draws while and after it trains, as PNG files in its run directory and in
W&B (the W&B run's name and group: ``alexnet.training.tracking.wandb_identity``).

* :class:`KernelSnapshots`: Figure 3 every N epochs while training, to watch the kernels form;
* :func:`figures_at_train_end`: all figures for the trained network (``alexnet.figures.render``)
  into ``<run dir>/figures/``, then as W&B images and tables;
* :func:`log_figures` / :func:`log_csv_tables`: a rendered FigureSet, or CSV reports, to a W&B
  run.

Every PNG lands in the run directory first, so all of it works offline and without an account;
W&B only gets copies.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L

from alexnet.figures.render import FigureSet, RenderOptions, draw_kernels, render_figures, towers_of
from alexnet.training.tracking import STEP_METRIC, sweep_dir_of, wandb_run

log = logging.getLogger(__name__)

# CSV files in a sweep directory that are logged as W&B tables: the ablation report's output.
REPORT_PATTERNS = ("report*.csv", "ablation*.csv")


# -- figures during and after training --------------------------------------------------------


class KernelSnapshots(L.Callback):
    """Figure 3 after every ``every_n_epochs`` training epochs.

    Writes ``<figures_dir>/kernels/epoch_NNN.png`` and logs it to W&B as ``figures/kernels``
    at the current step, so W&B's step slider plays the kernels forming.
    """

    def __init__(self, every_n_epochs: int, figures_dir: Path) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"figures.kernels_every_n_epochs={every_n_epochs} must be >= 1")
        self.every_n_epochs, self.folder = every_n_epochs, Path(figures_dir) / "kernels"
        self.paths: list[Path] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed
        skip = trainer.fast_dev_run or trainer.sanity_checking or not trainer.is_global_zero
        if skip or epoch % self.every_n_epochs:
            return
        path = draw_kernels(
            pl_module.net,
            towers_of(pl_module),
            self.folder,
            path=self.folder / f"epoch_{epoch:03d}.png",
            title=f"first-layer kernels after epoch {epoch}",
        )
        self.paths.append(path)
        run = wandb_run(trainer.loggers)
        if run is not None:
            import wandb

            run.log(
                {
                    "figures/kernels": wandb.Image(str(path), caption=f"epoch {epoch}"),
                    STEP_METRIC: trainer.global_step,
                }
            )


def figure_callbacks(spec: Mapping[str, Any] | None, run_dir: Path) -> list[L.Callback]:
    """The callbacks the ``figures`` config block asks for; checks its options early, so a typo
    fails before training rather than after it."""
    spec = dict(spec or {})
    RenderOptions.from_config(spec).check()
    every = int(spec.get("kernels_every_n_epochs") or 0)
    if not spec.get("enabled", True) or every <= 0:
        return []
    return [KernelSnapshots(every, Path(run_dir) / "figures")]


def figures_at_train_end(
    spec: Mapping[str, Any] | None,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    run_dir: Path,
    trainer: L.Trainer,
) -> FigureSet | None:
    """Render all figures into ``<run_dir>/figures/`` and log them to the run's W&B run.

    Off when ``figures.enabled=false`` and under ``fast_dev_run`` (which writes no outputs).
    Never raises: the run has finished and its results are on disk; a failure here is logged with
    the command that renders the figures later.
    """
    spec = dict(spec or {})
    if not spec.get("enabled", True) or trainer.fast_dev_run or not trainer.is_global_zero:
        return None
    run_dir = Path(run_dir)
    try:
        figures = render_figures(
            module,
            datamodule,
            run_dir / "figures",
            RenderOptions.from_config(spec),
            metrics_csv=run_dir / "csv" / "metrics.csv",
        )
        run = wandb_run(trainer.loggers)
        if run is not None:
            log_figures(run, figures, step=trainer.global_step)
            sweep = sweep_dir_of(run_dir)
            if sweep is not None:
                log_csv_tables(run, sweep, REPORT_PATTERNS)
        return figures
    except Exception:  # the trained run must survive a broken figure
        log.exception(
            "rendering the figures failed; retry with: python -m alexnet.figures ckpt_path=%s",
            run_dir / "checkpoints" / "last.ckpt",
        )
        return None


# -- W&B media ---------------------------------------------------------------------------------


def log_figures(run, figures: FigureSet, step: int | None = None) -> None:
    """Each PNG as ``figures/<name>`` (a W&B image) and each table as ``tables/<name>``."""
    import wandb

    payload: dict[str, Any] = {
        f"figures/{name}": wandb.Image(str(path))
        for name, path in figures.paths.items()
        if path.suffix == ".png"
    }
    for name, rows in figures.tables.items():
        payload[f"tables/{name}"] = rows_table(rows)
    if step is not None:
        payload[STEP_METRIC] = step
    run.log(payload)


def log_csv_tables(run, folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Every CSV in ``folder`` matching ``patterns`` as the W&B table ``tables/<file stem>``."""
    found = sorted({p for pattern in patterns for p in Path(folder).glob(pattern)})
    for path in found:
        with path.open(newline="") as f:
            rows = [{k: _number_or_text(v) for k, v in row.items()} for row in csv.DictReader(f)]
        if rows:
            run.log({f"tables/{path.stem}": rows_table(rows)})
    return found


def rows_table(rows: Sequence[Mapping[str, Any]]):
    """A ``wandb.Table`` whose columns are the first row's keys."""
    import wandb

    columns = list(rows[0]) if rows else []
    return wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])


def _number_or_text(cell: str | None):
    """CSV cells are text; numbers become floats so W&B sorts and plots them as numbers."""
    try:
        return float(cell)
    except (TypeError, ValueError):
        return cell
