"""`paths.log_dir` checked before Hydra creates a run directory in it, which would otherwise fail
with a traceback: `LogDirCheck` is the Hydra callback (conf/hydra/default.yaml) that does it, in
every process Hydra starts, a multirun's launcher included. So this module imports no torch; the
preflight (`alexnet.config.validate`) checks the run's own output dir with `unwritable` too.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from alexnet.config import ConfigError


def unwritable(key: str, folder: Any) -> tuple[str, OSError] | None:
    """None when ``folder`` (the value of ``key``) can be created and written in; else the
    one-line complaint and the OSError behind it. Makes the folder, as the run would."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        message = (
            f"{key}={folder} is not writable ({err.strerror or err}); set LOG_DIR or "
            f"paths.log_dir to a folder you can write"
        )
        return message, err
    return None


class LogDirCheck(Callback):
    """Refuse an unwritable `paths.log_dir` with one line, before Hydra tries to create the run
    directory in it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    @staticmethod
    def _check(config: DictConfig) -> None:
        log_dir = OmegaConf.select(config, "paths.log_dir", default=None)
        if log_dir is None:
            return
        problem = unwritable("paths.log_dir", log_dir)
        if problem is None:
            return
        message, err = problem
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise ConfigError(message) from err
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
