"""One job of a Hydra multirun (an ablation grid): skip it when done, never let it stop the grid.

A grid is only useful when every cell gets its chance and an interrupted grid can be finished, so
each job's outcome lives in ``<job dir>/results.json``:

- ``"status": "ok"``: written by ``alexnet.train.train`` when the job finished. Re-running the
  same sweep skips the job (the launcher does not even start it).
- ``"status": "failed"``: the job raised, or its process died (``"error"`` says how, in one
  line; the traceback is in the job's ``train.log``). The next run of the sweep tries again.
- ``"status": "interrupted"``: Ctrl-C; the sweep stops, the next run tries this job again.
- no ``results.json``: the job never ended (killed with its sweep) or never started.

Before a job is tried again, what its last attempt left (``results.json``, ``csv/``,
``checkpoints/``, ``wandb/``) moves to ``attempts/<n>/``: nothing is lost, and the new attempt's
logs are not mixed with the old ones (Lightning's CSVLogger would delete the old file anyway).

This module imports neither torch nor Lightning: the subprocess launcher
(``hydra_plugins.alexnet_launcher``) uses it in the sweep's parent process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RESULTS = "results.json"
ATTEMPTS = "attempts"
# Set by the subprocess launcher in each job's environment: the sweep the job belongs to.
SWEEP_DIR_ENV = "ALEXNET_SWEEP_DIR"
# What a job leaves that is not its own record of the attempt (Hydra's, or earlier attempts).
KEEP_ON_RETRY = (".hydra", ATTEMPTS)


def read_results(job_dir: str | Path) -> dict[str, Any] | None:
    """The job's ``results.json``, or None when absent or unreadable (a job killed mid-write
    cannot leave half a file: results are written atomically)."""
    path = Path(job_dir) / RESULTS
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_done(job_dir: str | Path) -> bool:
    """Only a job that finished counts as done; failed or interrupted ones run again."""
    results = read_results(job_dir)
    return bool(results) and results.get("status") == "ok"


def write_results_atomic(job_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results.json`` so that a reader never sees half a file."""
    path = Path(job_dir) / RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(path)
    return path


def one_line(err: BaseException) -> str:
    """``"ValueError: first line of the message"``."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def failure(
    status: str,
    error: str,
    *,
    task_name: str | None = None,
    overrides: list[str] | None = None,
    config: dict[str, Any] | None = None,
    wall_time_s: float | None = None,
) -> dict[str, Any]:
    """The ``results.json`` of a job that did not finish."""
    return {
        "task_name": task_name,
        "status": status,
        "error": error,
        "metrics": {},
        "wall_time_s": wall_time_s,
        "overrides": overrides or [],
        "config": config,
    }


def set_aside_previous_attempt(job_dir: str | Path) -> Path | None:
    """Move what an earlier attempt left in ``job_dir`` to ``attempts/<n>/``; returns it.

    Hydra's ``.hydra/`` (rewritten for every attempt), the job logs (``*.log``, appended to) and
    earlier attempts stay where they are.
    """
    job_dir = Path(job_dir)
    leftovers = [
        p for p in sorted(job_dir.iterdir()) if p.name not in KEEP_ON_RETRY and p.suffix != ".log"
    ] if job_dir.is_dir() else []
    if not leftovers:
        return None
    attempts = job_dir / ATTEMPTS
    n = 1 + max((int(p.name) for p in attempts.glob("*") if p.name.isdigit()), default=0)
    target = attempts / str(n)
    target.mkdir(parents=True)
    for path in leftovers:
        shutil.move(str(path), str(target / path.name))
    log.info("previous attempt of %s moved to %s", job_dir, target)
    return target


def sweep_dir_of_job() -> Path | None:
    """The sweep this process runs a job of: set by the subprocess launcher, or Hydra's
    ``hydra.sweep.dir`` when jobs run in-process (``hydra/launcher=basic``); else None."""
    if os.environ.get(SWEEP_DIR_ENV):
        return Path(os.environ[SWEEP_DIR_ENV])
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return Path(hydra_cfg.sweep.dir)
    return None


def _job_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def _config_for_record(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve may be the very failure
        return OmegaConf.to_container(cfg, resolve=False)


def run_sweep_job(cfg: DictConfig, task: Callable[[DictConfig], dict[str, Any]]) -> dict[str, Any]:
    """Run ``task(cfg)`` as one job of a sweep; never raises an Exception.

    Returns the job's results: the earlier ones when it is done already, ``task``'s when it
    succeeds, a ``"failed"`` record (also written to ``results.json``) when it raises.
    KeyboardInterrupt writes ``"interrupted"`` and propagates: Ctrl-C stops the sweep.
    """
    job_dir = Path(cfg.paths.output_dir)
    if os.environ.get("LOCAL_RANK", "0") != "0":
        # A rank Lightning started for a multi-device job: the job's first process does the
        # bookkeeping (moving files here would pull them from under it).
        return task(cfg)
    if is_done(job_dir):
        log.info("skipping %s: results.json says it finished", job_dir)
        return read_results(job_dir) or {}
    set_aside_previous_attempt(job_dir)
    start = time.perf_counter()

    def record(status: str, error: str) -> dict[str, Any]:
        results = failure(
            status, error, task_name=cfg.get("task_name"), overrides=_job_overrides(),
            config=_config_for_record(cfg), wall_time_s=time.perf_counter() - start,
        )
        write_results_atomic(job_dir, results)
        return results

    try:
        return task(cfg)
    except KeyboardInterrupt:
        record("interrupted", "KeyboardInterrupt")
        raise
    except Exception as err:  # the grid goes on; the report lists this cell as failed
        log.exception("job %s failed", job_dir)
        return record("failed", one_line(err))


__all__ = [
    "RESULTS",
    "SWEEP_DIR_ENV",
    "failure",
    "is_done",
    "one_line",
    "read_results",
    "run_sweep_job",
    "set_aside_previous_attempt",
    "sweep_dir_of_job",
    "write_results_atomic",
]
