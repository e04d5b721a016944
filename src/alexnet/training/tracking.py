"""CSV and W&B loggers for a run directory; W&B never waits on the network unless asked to.

The loggers are the `_target_`s of conf/logger (`ResumableCSVLogger`, `ResumableWandbLogger`):
Lightning's own, so every option of theirs can be set from the command line, with this lab's
defaults and behaviour added. Building one starts nothing; `start_loggers` starts the W&B run.

Online W&B without a network must not hang a run (wandb's own retries take minutes): before an
online run starts, a TCP connection to the W&B server is tried with a 3-second timeout (skipped
when a proxy is configured, since the direct route may then be closed on purpose), and
`wandb.init` gets `init_timeout`; either failing gives a warning and an offline run in the same
place, which `wandb sync <run dir>/wandb/offline-run-*` uploads later. `start_wandb` holds that
logic; training (`ResumableWandbLogger.start`), `python -m alexnet.figures` and the ablation
report all go through it.
"""

from __future__ import annotations

import csv
import inspect
import logging
import netrc
import os
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

# Lower is better for these; W&B's summary shows their best value, not the last one.
MIN_SUMMARY_METRICS = ("val/top1_err", "val/top5_err")
STEP_METRIC = "trainer/global_step"  # WandbLogger's x-axis
log = logging.getLogger(__name__)

WANDB_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0
INIT_TIMEOUT_S = 30.0
# wandb's modes, and `auto`: online only when logged in (`wandb_mode`)
WANDB_MODES = ("auto", "online", "offline", "disabled")


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


def wandb_reachable(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the W&B server (WANDB_BASE_URL or api.wandb.ai) opens within
    `timeout` seconds. True without trying when a proxy is configured."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    parsed = urlparse(url or os.environ.get("WANDB_BASE_URL") or WANDB_URL)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


T = TypeVar("T")


def wandb_settings(extra: Mapping[str, Any] | None = None):
    """The settings every W&B run here starts with: `wandb.init` gives up after INIT_TIMEOUT_S,
    unless `extra` (settings a user gave) sets `init_timeout` itself."""
    import wandb

    return wandb.Settings(**{"init_timeout": INIT_TIMEOUT_S, **(extra or {})})


def start_wandb(requested: str, start: Callable[[str], T], output_dir: Path) -> T | None:
    """`start(mode)` for the mode `wandb_mode(requested)` resolves to, never blocked by the
    network: an unreachable server, or an online start that fails (its init timeout included),
    gives a warning and `start("offline")`. None under `disabled`.

    `start` starts the run (so that failures happen here) with `settings=wandb_settings()`;
    `output_dir` is where its `wandb/` folder goes, named in the warning.
    """
    mode = wandb_mode(requested)
    if mode == "online" and not wandb_reachable():
        url = os.environ.get("WANDB_BASE_URL") or WANDB_URL
        log.warning(
            "W&B server %s is unreachable: logging offline to %s/wandb instead "
            "(upload later with `wandb sync`)",
            url,
            output_dir,
        )
        mode = "offline"
    if mode == "online":
        try:
            return start(mode)
        except Exception as err:  # wandb.errors.CommError, UsageError, timeouts ...
            log.warning(
                "W&B online run could not start (%s): logging offline to %s/wandb instead",
                str(err).splitlines()[0],
                output_dir,
            )
            finish_wandb()
            mode = "offline"
    return None if mode == "disabled" else start(mode)


class ResumableWandbLogger(WandbLogger):
    """Lightning's WandbLogger as a run here uses it: the run lives in `<save_dir>/wandb/`,
    offline unless you are logged in, never waits on the network, and a resumed training
    continues its W&B run.

    Every other keyword of WandbLogger and of `wandb.init` passes through unchanged (`entity`,
    `job_type`, `tags`, `notes`, `log_model`, `settings`, ...). `mode` adds `auto` to wandb's
    modes (`wandb_mode`); it is the one switch, so WandbLogger's `offline` is refused.

    Building one starts nothing, so the preflight (alexnet.config.validate) builds it to check
    its keywords; `start` starts the run.
    """

    def __init__(
        self,
        save_dir: str | Path = ".",
        project: str = "alexnet-lab",
        mode: str = "auto",
        offline: bool = False,
        **kwargs: Any,
    ) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"mode={mode!r} is unknown; choose one of {', '.join(WANDB_MODES)}")
        if offline:
            # WandbLogger would set WANDB_MODE for the whole process, past this run's end.
            raise ValueError(f"offline={offline!r} is not used here; set mode=offline instead")
        super().__init__(save_dir=str(save_dir), project=project, **kwargs)
        self.requested_mode = mode

    @classmethod
    def accepted_keywords(cls) -> set[str]:
        """Every keyword it takes: its own, WandbLogger's, and `wandb.init`'s, which its
        `**kwargs` reach (the preflight refuses any other)."""
        import wandb

        names: set[str] = set()
        for function in (cls.__init__, WandbLogger.__init__, wandb.init):
            names |= {
                p.name
                for p in inspect.signature(function).parameters.values()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            }
        return names - {"self", "experiment"}

    def start(
        self,
        config: Mapping[str, Any],
        name: str,
        group: str | None,
        tags: Sequence[str],
        resume_id: str | None = None,
    ) -> bool:
        """Start the run now, so that a failure happens here and not mid-training: in the mode
        `mode` resolves to, offline when the server cannot be reached (`start_wandb`), with
        `config` as the run config and the validation errors summarised by their minimum.

        `name`, `group` and `tags` (the run's identity, `wandb_identity`) apply where this
        logger's own are unset. `resume_id`, the id of the W&B run that wrote the checkpoint a
        training resumes from, is continued (WandbLogger starts runs with `resume="allow"`; an
        `id` given to this logger wins). False under mode `disabled`: there is no run.
        """
        init = self._wandb_init
        init["name"] = self._name = init.get("name") or name
        init["group"] = init.get("group") or group
        if init.get("tags") is None:
            init["tags"] = list(tags)
        if resume_id and not init.get("id"):
            init["id"] = self._id = resume_id
        init["settings"] = wandb_settings(init.get("settings"))

        def begin(mode: str) -> ResumableWandbLogger:
            self._experiment = None  # an online start that failed leaves nothing to reuse
            init["mode"] = mode
            self.log_hyperparams(dict(config))  # starts the run
            define_summaries(self.experiment)
            return self

        return start_wandb(self.requested_mode, begin, Path(self.save_dir or ".")) is not None


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer without its deletion of an existing metrics.csv: what to keep of
    it is decided by `ResumableCSVLogger.restart`. Counts the rows the file holds, so that a
    checkpoint can record it without reading the file back."""

    rows = 0

    def _check_log_dir_exists(self) -> None:
        pass

    def save(self) -> None:
        self.rows += len(self.metrics)
        super().save()


class ResumableCSVLogger(CSVLogger):
    """`<run dir>/csv/metrics.csv`, continued (not replaced) when a run resumes in its own
    directory, as an ablation grid's interrupted cell does.

    Every row is written as soon as it is logged, so the file always holds what was logged.
    `alexnet.training.resume.ResumeCheckpoint` stores in each checkpoint how many rows the file
    held when it was written, and on resume calls `restart` to drop the rows logged after that
    checkpoint: the resumed run logs them again, and the file ends as that of a run that never
    stopped.
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str = "csv",
        version: str | int | None = "",
        flush_logs_every_n_steps: int = 1,
        **kwargs: Any,  # any other CSVLogger keyword
    ) -> None:
        super().__init__(
            save_dir=save_dir,
            name=name,
            version=version,
            flush_logs_every_n_steps=flush_logs_every_n_steps,
            **kwargs,
        )

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    def _rows(self) -> tuple[list[str], list[dict[str, str]]]:
        path = Path(self.experiment.metrics_file_path)
        if not path.is_file():
            return [], []
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)

    def rows_written(self) -> int:
        """How many metric rows the file holds now (after writing any still pending)."""
        self.experiment.save()
        return self.experiment.rows

    def restart(self, keep: int, keep_after=None) -> None:
        """Keep the first `keep` rows, and of the later ones those for which `keep_after(row)`
        is true; a fresh run (`keep=0`, no `keep_after`) starts an empty file."""
        writer = self.experiment
        header, rows = self._rows()
        kept = rows[:keep] + [r for r in rows[keep:] if keep_after is not None and keep_after(r)]
        writer.rows = len(kept)
        path = Path(writer.metrics_file_path)
        if not kept:
            path.unlink(missing_ok=True)
            writer.metrics_keys = []
            return
        with path.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(kept)
        writer.metrics_keys = list(header)


def start_loggers(
    loggers: Iterable[Logger],
    name: str,
    tags: Sequence[str],
    config: Mapping[str, Any],
    group: str | None = None,
    resume_from: str | Path | None = None,
) -> list[Logger]:
    """The loggers to train with, their W&B runs started (`ResumableWandbLogger.start`, which
    says what `name`, `group`, `tags` and `config` become); one under mode `disabled` is left
    out. A training resumed from the checkpoint `resume_from` continues the W&B run that wrote
    it (its id is in the checkpoint). Other loggers are kept as built.
    """
    started: list[Logger] = []
    for logger in loggers:
        if isinstance(logger, ResumableWandbLogger):
            if not logger.start(config, name, group, tags, wandb_id_in(resume_from)):
                continue
        started.append(logger)
    return started


def wandb_id_in(ckpt_path: str | Path | None) -> str | None:
    """The id of the W&B run that wrote the checkpoint `ckpt_path` (alexnet.training.resume),
    or None (no checkpoint, or one written without W&B or by another program)."""
    if not ckpt_path:
        return None
    from alexnet.training.checkpoints import load_checkpoint

    state = load_checkpoint(ckpt_path, mmap=True).get("callbacks") or {}
    return (state.get("ResumeCheckpoint") or {}).get("wandb_id")


def define_summaries(run) -> None:
    """Summarise the validation errors as their minimum (the best epoch), on Lightning's x-axis
    (a metric defined by name no longer follows WandbLogger's `*` definition, so it says so)."""
    for name in MIN_SUMMARY_METRICS:
        run.define_metric(name, step_metric=STEP_METRIC, step_sync=True, summary="min")


def finish_wandb() -> None:
    """End the W&B run so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")  # not imported: there is no run (its import costs ~0.5 s)
    if wandb is not None and wandb.run is not None:
        wandb.finish()
        # finish() can return before the service has written the run's last records (the test
        # metrics) to disk; tearing the service down waits for that. A next run starts its own.
        wandb.teardown()


# -- the run's identity ----------------------------------------------------------------------


def sweep_dir_of(run_dir: Path) -> Path | None:
    """The multirun folder holding ``run_dir``, or None for a single run.

    Hydra writes ``multirun.yaml`` into the sweep folder before it starts the first job, and each
    job runs in a sub-folder of it, so this works during training and later alike.
    """
    parent = Path(run_dir).resolve().parent
    return parent if (parent / "multirun.yaml").is_file() else None


def wandb_identity(
    task_name: str, tags: Sequence[str], run_dir: Path, spec: Mapping[str, Any] | None = None
) -> tuple[str, str, list[str]]:
    """``(name, group, tags)`` of the W&B run of the training run in ``run_dir``.

    The one naming rule: training (``alexnet.train``) names its run with it, and
    ``python -m alexnet.figures`` calls it again on the checkpoint's run dir, so the figures run
    (``<name>/figures``) lands in the training run's group.

    A single run is named and grouped by its ``task_name`` (each experiment sets its own), so
    the runs of one recipe sit together. A sweep job (its folder sits in one holding
    ``multirun.yaml``) is named after its job folder (the swept overrides, e.g.
    ``model.lrn=false,seed=0``) and grouped by the sweep folder's name, so each sweep is one
    group (the report's run joins it, ``alexnet.report.wandb_log``); it is also tagged ``sweep``.
    ``spec`` is the run's ``logger.wandb`` node: its ``name``, ``group`` and ``tags``, when set,
    are used as given.
    """
    tags = [str(t) for t in tags]
    sweep = sweep_dir_of(run_dir)
    if sweep is None:
        name = group = task_name
    else:
        name, group, tags = Path(run_dir).name, sweep.name, [*tags, "sweep"]
    spec = spec or {}
    if spec.get("tags") is not None:
        tags = [str(t) for t in spec["tags"]]
    return spec.get("name") or name, spec.get("group") or group, tags


def wandb_run(loggers: Iterable[Any]):
    """The W&B run behind a WandbLogger in ``loggers``, or None."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            return logger.experiment
    return None
