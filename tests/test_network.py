"""Nothing hangs on the network: W&B online without a server falls back to offline in seconds,
and importing the package makes no request (albumentations' update check is off).

Only loopback addresses are used: WANDB_BASE_URL points at a closed local port.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexnet.training import tracking as loggers
from alexnet.training.tracking import ResumableWandbLogger, finish_wandb, start_loggers

REPO = Path(__file__).resolve().parents[1]
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.fixture
def online_without_server(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a dummy key: "logged in"
    monkeypatch.setenv("WANDB_BASE_URL", CLOSED)
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    yield
    finish_wandb()


def start_wandb_logger(run_dir: Path) -> list:
    """conf/logger's W&B logger (mode auto) started as training starts it."""
    return start_loggers([ResumableWandbLogger(save_dir=run_dir)], "t", [], {"lr": 0.01})


def test_wandb_online_without_server_falls_back_to_offline_fast(
    online_without_server, tmp_path, caplog
):
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="alexnet.training.tracking"):
        (logger,) = start_wandb_logger(tmp_path)
    assert time.monotonic() - start < 15  # the probe itself gives up after 3 s
    assert f"W&B server {CLOSED} is unreachable: logging offline" in caplog.text
    assert logger.experiment.settings.mode == "offline"
    finish_wandb()
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.slow
def test_wandb_init_failure_falls_back_to_offline(
    online_without_server, tmp_path, caplog, monkeypatch
):
    # Second line of defence: the probe passes (as behind a proxy) but wandb.init cannot start.
    monkeypatch.setattr(loggers, "wandb_reachable", lambda: True)
    monkeypatch.setattr(loggers, "INIT_TIMEOUT_S", 2.0)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="alexnet.training.tracking"):
        (logger,) = start_wandb_logger(tmp_path)
    assert time.monotonic() - start < 90
    assert "W&B online run could not start" in caplog.text
    assert logger.experiment.settings.mode == "offline"


def test_figures_run_falls_back_to_offline_when_wandb_is_unreachable(tmp_path, monkeypatch, caplog):
    # `python -m alexnet.figures` must take the same path as training: logged in (a dummy key),
    # WANDB_MODE unset, the server unreachable -> a warning and an offline run, no online init.
    import wandb

    import alexnet.training.figure_callbacks
    from alexnet.figures.__main__ import log_to_new_wandb_run

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", CLOSED)
    monkeypatch.setattr(loggers, "wandb_reachable", lambda: False)
    real_init, seen = wandb.init, {}

    def init(**kwargs):
        seen["init"] = kwargs
        if kwargs.get("mode") == "online":
            raise AssertionError("wandb.init went online without a reachable server")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(
        alexnet.training.figure_callbacks,
        "log_figures",
        lambda run, figures, step=None: seen.setdefault("mode", run.settings.mode),
    )
    try:
        with caplog.at_level(logging.WARNING, logger="alexnet.training.tracking"):
            log_to_new_wandb_run({"mode": "auto"}, tmp_path, tmp_path / "last.ckpt", None, {})
    finally:
        finish_wandb()
    assert seen["mode"] == "offline"
    assert seen["init"]["settings"].init_timeout == loggers.INIT_TIMEOUT_S
    assert f"W&B server {CLOSED} is unreachable: logging offline" in caplog.text
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_probe_gives_up_quickly_on_a_closed_port():
    start = time.monotonic()
    assert not loggers.wandb_reachable(CLOSED, timeout=3.0)
    assert time.monotonic() - start < 3.5


GUARD = """
import socket, sys, urllib.request
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:] or args)[:80])
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
urllib.request.urlopen = refuse
{imports}
print("NO_ALBUMENTATIONS_UPDATE=" + __import__("os").environ.get("NO_ALBUMENTATIONS_UPDATE", ""))
print("attempts=%d" % len(attempts))
"""


def run_guarded(imports: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    proc = subprocess.run(
        [sys.executable, "-c", GUARD.format(imports=imports)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_importing_the_package_makes_no_request():
    out = run_guarded("import alexnet.data.augment.presets, alexnet.train, alexnet.training.run")
    assert "NO_ALBUMENTATIONS_UPDATE=1" in out and "attempts=0" in out


def test_the_guard_would_see_albumentations_update_check():
    # Control: albumentations on its own (no alexnet import first) does try to reach PyPI.
    out = run_guarded("import albumentations")
    assert "attempts=0" not in out


def test_report_run_falls_back_to_offline_when_wandb_is_unreachable(tmp_path, monkeypatch, caplog):
    # `make report` logs to W&B as training does: logged in, the server unreachable -> a
    # warning and an offline run in the sweep dir, never an online init.
    import wandb

    from alexnet.report.analysis import analyse
    from alexnet.report.sweep import expand_grid, read_sweep
    from alexnet.report.wandb_log import log_report
    from sweeps import config_of, write_job, write_multirun

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", CLOSED)
    monkeypatch.setattr(loggers, "wandb_reachable", lambda: False)
    real_init, modes = wandb.init, []

    def init(**kwargs):
        modes.append(kwargs.get("mode"))
        if kwargs.get("mode") == "online":
            raise AssertionError("wandb.init went online without a reachable server")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    multirun = write_multirun(tmp_path, {"model.lrn": "true,false"}, [])
    spec = {"project": "alexnet-lab", "group": None, "name": None, "mode": "auto"}
    for overrides, err in zip(expand_grid(multirun), (0.2, 0.3), strict=True):
        config = config_of(overrides, wandb=spec)
        metrics = {"test/top1_err": err, "test/top5_err": err}
        write_job(tmp_path, overrides, config=config, metrics=metrics)
    try:
        with caplog.at_level(logging.WARNING, logger="alexnet.training.tracking"):
            run_dir = log_report(analyse(read_sweep(tmp_path)), None)
    finally:
        finish_wandb()
    assert modes == ["offline"] and run_dir is not None
    assert f"W&B server {CLOSED} is unreachable: logging offline" in caplog.text
