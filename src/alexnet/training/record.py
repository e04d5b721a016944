"""`results.json`, the record a run leaves in its directory: written atomically, read back, and
stamped with where the result came from.

Every run's record carries `provenance`: the git commit of the code (and whether the work tree
had uncommitted changes), the versions of torch, lightning and torchvision, the device (GPU name,
or CPU model and thread count) and the precision it trained in. With `wall_time_s` (this process)
and `train_time_s` (training time summed over every attempt that resumed it) that is what a
number in `results/` must be able to show.

This module imports neither torch nor Lightning: the grid launcher reads records in the sweep's
parent process.
"""

from __future__ import annotations

import json
import subprocess
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = "results.json"


class Status(str, Enum):
    """`results.json`'s `status`: how a run ended (the last two only describe grid jobs that
    left no record)."""

    OK = "ok"  # finished: trained and tested
    FAILED = "failed"  # raised, or its process died (the record's `error` says how)
    INTERRUPTED = "interrupted"  # Ctrl-C
    PREEMPTED = "preempted"  # SIGTERM: last.ckpt written, resume from it
    NONFINITE_LOSS = "nonfinite_loss"  # stopped on a NaN/inf loss (callbacks.nonfinite.mode=stop)
    INCOMPLETE = "incomplete"  # a grid job dir without a record: killed, or still running
    NOT_STARTED = "not started"  # a grid job with no dir yet

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


SOURCE_DIR = Path(__file__).resolve().parent
PACKAGES = ("torch", "lightning", "torchvision", "torchmetrics", "hydra-core")


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write `<run_dir>/results.json` so that a reader never sees half a file."""
    path = Path(run_dir) / RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(path)
    return path


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's `results.json`, or None when absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / RESULTS).read_text())
    except (OSError, ValueError):
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=SOURCE_DIR, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None} of the checkout the code runs from (None
    when it is not a git checkout, e.g. an installed wheel). Untracked files do not count."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    # results/ is where grids write while they run: their records do not make the code dirty.
    status = _git(
        "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"
    )
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def versions() -> dict[str, str | None]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def provenance(device: str, precision: str) -> dict[str, Any]:
    """Where a result came from; `device` as `alexnet.config.hardware.describe` words it."""
    return {**git_state(), "versions": versions(), "device": device, "precision": precision}


__all__ = [
    "RESULTS",
    "Status",
    "git_state",
    "provenance",
    "read_results",
    "versions",
    "write_results",
]
