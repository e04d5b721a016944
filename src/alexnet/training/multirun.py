"""One job of a Hydra multirun (an ablation grid): skip it when done, never let it stop the grid.

A grid is only useful when every cell gets its chance and an interrupted grid can be finished, so
each job's outcome lives in ``<job dir>/results.json``:

- ``"status": "ok"``: written by ``alexnet.training.run.train`` when the job finished.
  Re-running the same sweep skips the job (the launcher does not even start it).
- ``"status": "failed"``: the job raised, or its process died (``"error"`` says how, in one
  line; the traceback is in the job's ``train.log``). The next run of the sweep tries again.
- ``"status": "interrupted"``: Ctrl-C; the sweep stops, the next run tries this job again.
- no ``results.json``: the job never ended (killed with its sweep) or never started.

A job that was stopped from outside (killed, SIGTERM, Ctrl-C) and left a ``last.ckpt`` resumes from
it in place (`resume_point`): its ``csv/metrics.csv`` is continued from the checkpoint
(alexnet.training.tracking.ResumableCSVLogger), and the cell ends as if it had never stopped; only
its old ``results.json`` moves to ``attempts/<n>/``. Any other unfinished job starts afresh: what
its last attempt left (``results.json``, ``csv/``, ``checkpoints/``, ``wandb/``) moves to
``attempts/<n>/``, so nothing is lost and the new attempt's logs are not mixed with the old ones.

This module imports neither torch nor Lightning: the subprocess launcher
(``hydra_plugins.alexnet_launcher``) uses it in the sweep's parent process.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alexnet.training.record import RESULTS, Status, read_results, write_results

log = logging.getLogger(__name__)

ATTEMPTS = "attempts"
# Set by the subprocess launcher in each job's environment: the sweep the job belongs to.
SWEEP_DIR_ENV = "ALEXNET_SWEEP_DIR"
# What a job leaves that is not its own record of the attempt (Hydra's, or earlier attempts).
KEEP_ON_RETRY = (".hydra", ATTEMPTS)


def is_done(job_dir: str | Path) -> bool:
    """Only a job that finished counts as done; failed or interrupted ones run again."""
    results = read_results(job_dir)
    return bool(results) and results.get("status") == Status.OK


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
    leftovers = (
        [p for p in sorted(job_dir.iterdir()) if p.name not in KEEP_ON_RETRY and p.suffix != ".log"]
        if job_dir.is_dir()
        else []
    )
    if not leftovers:
        return None
    target = _next_attempt_dir(job_dir)
    for path in leftovers:
        shutil.move(str(path), str(target / path.name))
    log.info("previous attempt of %s moved to %s", job_dir, target)
    return target


LAST_CKPT = Path("checkpoints") / "last.ckpt"
# How an attempt ended that resuming from its last.ckpt continues rather than repeats: stopped
# from outside (SIGTERM, Ctrl-C, SIGKILL), not by its own config or a non-finite loss.
STOPPED_FROM_OUTSIDE = (Status.PREEMPTED, Status.INTERRUPTED)
OUTSIDE_ERRORS = ("killed by", "BrokenPipeError")


def resume_point(job_dir: str | Path) -> Path | None:
    """The `last.ckpt` an unfinished job continues from, or None when it starts afresh.

    A job resumes when its last attempt was stopped from outside: killed before it could write
    `results.json` (the session, the machine or the OOM killer), SIGTERM (`preempted`), Ctrl-C
    (`interrupted`), a death the launcher recorded as `killed by ...`, or a BrokenPipeError: the
    job's output pipe closed because whatever read it (the launcher, a terminal) was killed
    first. One that failed for a reason of its own (a bad config, a non-finite loss, any other
    exception) starts afresh: resuming would repeat it.
    """
    last = Path(job_dir) / LAST_CKPT
    if not last.is_file():
        return None
    results = read_results(job_dir)
    if results is None:
        return last
    status, error = results.get("status"), str(results.get("error") or "")
    if status in STOPPED_FROM_OUTSIDE or (
        status == Status.FAILED and error.startswith(OUTSIDE_ERRORS)
    ):
        return last
    return None


def set_aside_record(job_dir: str | Path) -> Path | None:
    """Before a job resumes in place: only its last `results.json` moves to `attempts/<n>/`."""
    record = Path(job_dir) / RESULTS
    if not record.is_file():
        return None
    target = _next_attempt_dir(Path(job_dir))
    shutil.move(str(record), str(target / RESULTS))
    return target


def _next_attempt_dir(job_dir: Path) -> Path:
    attempts = job_dir / ATTEMPTS
    n = 1 + max((int(p.name) for p in attempts.glob("*") if p.name.isdigit()), default=0)
    target = attempts / str(n)
    target.mkdir(parents=True)
    return target


AUTO = "auto"


def auto_ckpt_path(run_dir: str | Path) -> Path | None:
    """What `ckpt_path=auto` means for a run in `run_dir`, by the rule a grid job follows.

    A run stopped from outside (SIGTERM, a requeue, a killed process) resumes from its
    `last.ckpt` (only its old `results.json` moves to `attempts/<n>/`); any other leftover attempt
    is moved to `attempts/<n>/` and the run starts afresh; an empty `run_dir` starts afresh. A
    finished run (`is_done`) is the caller's to skip. Extra DDP ranks re-run this after the
    first has moved things; they decide the same and move nothing.
    """
    first = os.environ.get("LOCAL_RANK", "0") == "0"
    resume = resume_point(run_dir)
    if resume is not None:
        if first and set_aside_record(run_dir) is not None:
            log.info("ckpt_path=auto: resuming from %s", resume)
        return resume
    if first:
        set_aside_previous_attempt(run_dir)
        log.info("ckpt_path=auto: nothing to resume in %s; starting afresh", run_dir)
    return None


def objective(
    results: dict[str, Any] | None, metric: str | None, if_failed: float | None = None
) -> Any:
    """What a run returns to Hydra: `results` itself, or with `optimized_metric` set the one
    number a sweeper minimises (Optuna, ...). A run that did not finish returns `if_failed`
    (`objective_if_failed`) when given, else NaN, as does a finished run that never logged the
    metric; optimisers count NaN as a failed trial."""
    if not metric:
        return results
    value = ((results or {}).get("metrics") or {}).get(metric)
    if value is not None:
        return float(value)
    finished = (results or {}).get("status") == Status.OK
    return float(if_failed) if if_failed is not None and not finished else float("nan")


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

    Returns ``task``'s results when it succeeds, a ``"failed"`` record (also written to
    ``results.json``) when it raises. KeyboardInterrupt writes ``"interrupted"`` and propagates:
    Ctrl-C stops the sweep. Skipping finished jobs and setting earlier attempts aside (or
    resuming them) is the launcher's work (hydra_plugins.alexnet_launcher), done before the
    job's process starts; Hydra's basic launcher (``hydra/launcher=basic``) does neither.
    """
    job_dir = Path(cfg.paths.output_dir)
    if os.environ.get("LOCAL_RANK", "0") != "0":
        # A rank Lightning started for a multi-device job: the job's first process does the
        # bookkeeping (moving files here would pull them from under it).
        return task(cfg)
    start = time.perf_counter()

    def record(status: str, error: str) -> dict[str, Any]:
        results = failure(
            status,
            error,
            task_name=cfg.get("task_name"),
            overrides=_job_overrides(),
            config=_config_for_record(cfg),
            wall_time_s=time.perf_counter() - start,
        )
        write_results(job_dir, results)
        return results

    try:
        return task(cfg)
    except KeyboardInterrupt:
        record(Status.INTERRUPTED, "KeyboardInterrupt")
        raise
    except Exception as err:  # the grid goes on; the report lists this cell as failed
        log.exception("job %s failed", job_dir)
        return record(Status.FAILED, one_line(err))


__all__ = [
    "RESULTS",
    "SWEEP_DIR_ENV",
    "failure",
    "is_done",
    "one_line",
    "resume_point",
    "set_aside_record",
    "read_results",
    "run_sweep_job",
    "set_aside_previous_attempt",
    "sweep_dir_of_job",
]
