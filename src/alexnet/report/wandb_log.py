"""Send the report's tables and figure to W&B, as one more run of the sweep's group.

Only when the sweep's jobs logged to W&B (their ``logger.wandb`` is set and not ``disabled``), in
the same mode they used (offline unless logged in, see ``alexnet.training.tracking.wandb_mode``),
same project and entity, same group (the sweep dir's name unless the config named one). The run is
``job_type="report"``, named ``report``, and lives in ``<sweep dir>/wandb/``. Offline nothing
touches the network; online it starts as training's runs do (``start_wandb``): a server that
cannot be reached gives a warning and an offline run. The report files are written before and
do not depend on it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alexnet.report.analysis import Report
from alexnet.report.tables import CSV_COLUMNS, csv_rows

log = logging.getLogger(__name__)


def wandb_spec(report: Report) -> dict[str, Any] | None:
    """The jobs' ``logger.wandb`` settings, or None when they did not log to W&B."""
    config = report.sweep.job_config() or {}
    spec = (config.get("logger") or {}).get("wandb")
    if not isinstance(spec, dict):
        return None
    from alexnet.training.tracking import wandb_mode

    mode = wandb_mode(spec.get("mode", "auto"))
    return None if mode == "disabled" else {**spec, "mode": mode}


def log_report(report: Report, png: Path | None) -> str | None:
    """Log the report to W&B when the sweep's jobs did; returns the run's dir, or None."""
    spec = wandb_spec(report)
    if spec is None:
        return None
    try:
        import wandb

        from alexnet.training.tracking import start_wandb, wandb_settings

        def start(mode: str):
            return wandb.init(
                project=spec.get("project") or "alexnet-lab",
                entity=spec.get("entity"),
                group=spec.get("group") or report.sweep.dir.name,
                name="report",
                job_type="report",
                dir=str(report.sweep.dir),
                mode=mode,
                config={"sweep_dir": str(report.sweep.dir), "level": report.level},
                settings=wandb_settings(),
            )

        run = start_wandb(spec["mode"], start, report.sweep.dir)
        if run is None:
            return None
        try:
            # plain str: W&B's table refuses str subclasses such as the Status enum
            rows = [[str(v) if isinstance(v, str) else v for v in row] for row in csv_rows(report)]
            table = wandb.Table(columns=list(CSV_COLUMNS), data=rows)
            payload: dict[str, Any] = {"report/table": table}
            if png is not None and png.is_file():
                payload["report/figure"] = wandb.Image(str(png))
            run.log(payload)
            for i, line in enumerate(report.claim_lines()):
                run.summary[f"verdict/{i}"] = line
            return str(run.dir)
        finally:
            run.finish()
    except Exception as err:  # noqa: BLE001 - W&B trouble must not cost the report
        log.warning("could not log the report to W&B: %s", err)
        return None


__all__ = ["log_report", "wandb_spec"]
