"""Read a Hydra multirun directory: the grid it was asked to run and what each job left.

The grid comes from ``<sweep>/multirun.yaml``, which Hydra writes at the start of every
multirun: the sweeper's ``params`` (the experiment file's grid) and the command line's overrides
are expanded exactly as Hydra's basic sweeper does, giving each job's override list. Each job
dir holds ``.hydra/overrides.yaml`` (its overrides), ``results.json`` (how it ended, see
``alexnet.training.multirun``) and ``csv/metrics.csv`` (its curves). A job of the grid is:

- ``ok``, ``failed`` or ``interrupted`` as its ``results.json`` says;
- ``incomplete`` when its dir exists without ``results.json`` (killed with its sweep, or running);
- ``not started`` when it has no dir.

Job dirs whose overrides are not in the grid (left by an earlier, different command in the same
sweep dir) are kept apart as stale and left out of every statistic.

The grid's *factors* are the override keys whose value varies across its jobs, except ``seed``,
which is the replicate: a *cell* is one combination of factor values, its seeds the samples.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from alexnet.figures.curves import Series, read_metrics_csv
from alexnet.training.multirun import ATTEMPTS
from alexnet.training.record import RESULTS, Status

log = logging.getLogger(__name__)

REPLICATE = "seed"
OK, FAILED, INTERRUPTED, INCOMPLETE, NOT_STARTED = (
    Status.OK,
    Status.FAILED,
    Status.INTERRUPTED,
    Status.INCOMPLETE,
    Status.NOT_STARTED,
)


def split_override(override: str) -> tuple[str, str]:
    """``"+trainer.x=3"`` -> ``("trainer.x", "3")``."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


@dataclass
class Job:
    """One job of the grid and what it left (see the module docstring for ``status``)."""

    overrides: tuple[str, ...]
    dir: Path | None = None
    status: str = NOT_STARTED
    results: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    _curves: dict[str, Series] | None = field(default=None, repr=False, compare=False)

    @property
    def values(self) -> dict[str, str]:
        return dict(split_override(o) for o in self.overrides)

    @property
    def name(self) -> str:
        return self.dir.name if self.dir else ",".join(self.overrides)

    @property
    def error(self) -> str | None:
        return (self.results or {}).get("error")

    def metric(self, name: str) -> float | None:
        value = ((self.results or {}).get("metrics") or {}).get(name)
        return None if value is None else float(value)

    def curves(self) -> dict[str, Series]:
        """The job's ``csv/metrics.csv`` as series (empty when it has none); read once."""
        if self._curves is None:
            self._curves = {}
            path = self.dir / "csv" / "metrics.csv" if self.dir else None
            if path is not None and path.is_file():
                try:
                    self._curves = read_metrics_csv(path)
                except (OSError, ValueError) as err:
                    log.warning("cannot read %s: %s", path, err)
        return self._curves

    def setting(self, dotted: str) -> Any:
        """A value of the job's config by dotted key (``"model.lrn"``), None when unknown."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


@dataclass
class Cell:
    """One combination of factor values and its jobs (one per seed)."""

    key: tuple[tuple[str, str], ...]  # ((factor, value), ...) in factor order
    jobs: list[Job] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.key) or "all"

    @property
    def values(self) -> dict[str, str]:
        return dict(self.key)

    @property
    def ok(self) -> list[Job]:
        return [j for j in self.jobs if j.status == OK]

    def metric_values(self, name: str, scale: float = 1.0) -> list[float]:
        return [v * scale for j in self.ok if (v := j.metric(name)) is not None]

    def setting(self, dotted: str) -> Any:
        """The value of a config key in this cell (from any job that has a config)."""
        for job in self.jobs:
            if job.config is not None:
                return job.setting(dotted)
        return None


@dataclass
class Sweep:
    dir: Path
    jobs: list[Job]
    factors: list[str]
    levels: dict[str, list[str]]
    stale: list[Job] = field(default_factory=list)
    multirun: dict[str, Any] | None = None

    @property
    def replicate(self) -> str | None:
        seeds = {j.values.get(REPLICATE) for j in self.jobs}
        return REPLICATE if len(seeds) > 1 else None

    def cells(self) -> list[Cell]:
        """The grid's cells in sweep order (the order of the factors' levels)."""
        by_key: dict[tuple, Cell] = {}
        for job in self.jobs:
            values = job.values
            key = tuple((f, values.get(f, "")) for f in self.factors)
            by_key.setdefault(key, Cell(key)).jobs.append(job)
        order = {f: {v: i for i, v in enumerate(self.levels[f])} for f in self.factors}
        return sorted(
            by_key.values(),
            key=lambda c: tuple(order[f].get(v, len(order[f])) for f, v in c.key),
        )

    def count(self, status: str) -> int:
        return sum(j.status == status for j in self.jobs)

    @property
    def task_name(self) -> str | None:
        for job in self.jobs:
            if job.config and job.config.get("task_name"):
                return job.config["task_name"]
        return (self.multirun or {}).get("task_name")

    def job_config(self) -> dict[str, Any] | None:
        """The config of a finished job (else of any job): for the logger settings."""
        for job in sorted(self.jobs, key=lambda j: j.status != OK):
            if job.config:
                return job.config
        return None


# ---------------------------------------------------------------------------------------------
# The grid Hydra was asked to run
# ---------------------------------------------------------------------------------------------


def expand_grid(multirun: dict[str, Any]) -> list[tuple[str, ...]] | None:
    """Every job's overrides, expanded from ``multirun.yaml`` as Hydra's basic sweeper does; None
    when the sweep used something this cannot expand (another sweeper, glob sweeps)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = multirun.get("hydra") or {}
    sweeper = hydra_cfg.get("sweeper") or {}
    if "basic_sweeper" not in str(sweeper.get("_target_", "basic_sweeper")):
        return None
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    task = list((hydra_cfg.get("overrides") or {}).get("task") or [])
    try:
        parsed = OverridesParser.create().parse_overrides(params + task)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception as err:  # noqa: BLE001 - any parse failure: fall back to the job dirs
        log.warning("cannot expand the grid of multirun.yaml (%s); using the job dirs", err)
        return None
    return [tuple(job) for batch in batches for job in batch]


def _factors(grid: Iterable[tuple[str, ...]]) -> tuple[list[str], dict[str, list[str]]]:
    levels: dict[str, list[str]] = {}
    for overrides in grid:
        for override in overrides:
            key, value = split_override(override)
            seen = levels.setdefault(key, [])
            if value not in seen:
                seen.append(value)
    factors = [k for k, v in levels.items() if len(v) > 1 and k != REPLICATE]
    return factors, {f: levels[f] for f in factors}


# ---------------------------------------------------------------------------------------------
# What the jobs left
# ---------------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    """The file as plain containers, interpolations left as written (``${now:...}``)."""
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - missing or unreadable: the job says less, no more
        return None


def read_job(job_dir: Path) -> Job:
    overrides = tuple(_load_yaml(job_dir / ".hydra" / "overrides.yaml") or ())
    results = None
    if (job_dir / RESULTS).is_file():
        try:
            results = json.loads((job_dir / RESULTS).read_text())
        except (OSError, ValueError):
            results = None
    status = results.get("status", FAILED) if results else INCOMPLETE
    config = (results or {}).get("config") or _load_yaml(job_dir / ".hydra" / "config.yaml")
    return Job(
        overrides=overrides,
        dir=job_dir,
        status=status,
        results=results,
        config=config if isinstance(config, dict) else None,
    )


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every dir under ``sweep_dir`` that holds a Hydra job (``.hydra/overrides.yaml``), earlier
    attempts (``attempts/``) excepted."""
    found = []
    for path in sorted(sweep_dir.rglob(".hydra/overrides.yaml")):
        job_dir = path.parent.parent
        if job_dir != sweep_dir and ATTEMPTS not in job_dir.relative_to(sweep_dir).parts:
            found.append(job_dir)
    return found


def _cell_key(overrides: Iterable[str]) -> frozenset[str]:
    """Which job of the grid a job dir is: its overrides, less where it resumed from (the launcher
    adds ``ckpt_path=<last.ckpt>`` to a job it resumes)."""
    return frozenset(o for o in overrides if o.lstrip("+~").split("=", 1)[0] != "ckpt_path")


def read_sweep(sweep_dir: str | Path) -> Sweep:
    """The sweep in ``sweep_dir``. Raises FileNotFoundError when it holds no sweep at all."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"sweep dir {sweep_dir} does not exist; give a multirun's "
            "hydra.sweep.dir (make ablate prints it)"
        )
    multirun = _load_yaml(sweep_dir / "multirun.yaml")
    multirun = multirun if isinstance(multirun, dict) else None
    found = [read_job(d) for d in job_dirs(sweep_dir)]
    if multirun is None and not found:
        raise FileNotFoundError(
            f"{sweep_dir} holds no multirun.yaml and no job dirs; give a multirun's hydra.sweep.dir"
        )
    grid = expand_grid(multirun) if multirun else None
    if grid is None:  # trust the job dirs
        grid = [job.overrides for job in found]
    by_overrides = {_cell_key(job.overrides): job for job in found}
    jobs = [by_overrides.pop(_cell_key(o), None) or Job(overrides=tuple(o)) for o in grid]
    stale = list(by_overrides.values())
    factors, levels = _factors(grid)
    return Sweep(sweep_dir, jobs, factors, levels, stale, multirun)


__all__ = [
    "FAILED",
    "INCOMPLETE",
    "INTERRUPTED",
    "NOT_STARTED",
    "OK",
    "REPLICATE",
    "Cell",
    "Job",
    "Sweep",
    "expand_grid",
    "job_dirs",
    "read_job",
    "read_sweep",
    "split_override",
]
