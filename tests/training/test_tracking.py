"""conf/logger: `_target_` nodes whose every option reaches Lightning's loggers and W&B.

W&B runs offline here (tests/conftest.py sets WANDB_MODE=offline): nothing touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alexnet.config.entry import build_loggers
from alexnet.training.tracking import (
    ResumableCSVLogger,
    ResumableWandbLogger,
    finish_wandb,
    start_loggers,
)
from wandb_files import wandb_records


def kinds(loggers) -> list[type]:
    return [type(logger) for logger in loggers]


def test_wandb_options_reach_the_offline_run(cfg_factory, tmp_path):
    cfg = cfg_factory(
        [
            "logger.wandb.tags=[a,b]",
            "logger.wandb.job_type=x",
            "+logger.wandb.notes=undeclared keywords pass through to wandb.init",
        ],
        output_dir=tmp_path,
    )
    built = build_loggers(cfg)
    assert kinds(built) == [ResumableCSVLogger, ResumableWandbLogger]
    try:
        started = start_loggers(built, "t", ["run-tag"], {"lr": 0.01, "parameters": 7}, group="g")
        assert started == built
    finally:
        finish_wandb()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    records = list(wandb_records(next(run.glob("run-*.wandb"))))
    info = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert list(info.tags) == ["a", "b"]  # the node's tags, as given
    assert info.job_type == "x"
    assert info.notes == "undeclared keywords pass through to wandb.init"
    assert (info.display_name, info.run_group, info.project) == ("t", "g", "alexnet-lab")
    config = {
        item.key: json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "config"
        for item in r.config.update
    }
    assert config["lr"] == 0.01 and config["parameters"] == 7


@pytest.mark.parametrize("log_model", ["true", "all"])
def test_wandb_logger_options_pass_through(cfg_factory, log_model):
    cfg = cfg_factory([f"logger.wandb.log_model={log_model}", "logger.wandb.entity=me"])
    (wandb,) = [lg for lg in build_loggers(cfg) if isinstance(lg, ResumableWandbLogger)]
    assert wandb._log_model == {"true": True, "all": "all"}[log_model]
    assert wandb._wandb_init["entity"] == "me"
    assert wandb.save_dir == cfg.paths.output_dir  # <run dir>/wandb/


def test_csv_logger_options_pass_through(cfg_factory, tmp_path):
    cfg = cfg_factory(["logger.wandb=null", "+logger.csv.prefix=p"], output_dir=tmp_path)
    (csv,) = build_loggers(cfg)
    assert Path(csv.log_dir) == tmp_path / "csv" and csv._prefix == "p"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["logger.wandb=null"], [ResumableCSVLogger]),
        (["logger=csv"], [ResumableCSVLogger]),
        (["logger=none"], []),
        (["logger.csv=null"], [ResumableWandbLogger]),
        (["logger.csv=false"], [ResumableWandbLogger]),  # read as null, as callbacks are
    ],
)
def test_null_removes_a_logger(cfg_factory, overrides, expected):
    assert kinds(build_loggers(cfg_factory(overrides))) == expected


def test_another_logger_is_one_more_node(cfg_factory, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from alexnet.config.validate import validate_config

    extra = [
        "data=synthetic",
        "+logger.plain._target_=lightning.pytorch.loggers.CSVLogger",
        f"+logger.plain.save_dir={tmp_path}",
    ]
    cfg = cfg_factory(extra)
    validate_config(cfg)
    assert kinds(build_loggers(cfg)) == [ResumableCSVLogger, ResumableWandbLogger, CSVLogger]


def test_mode_disabled_leaves_wandb_out(cfg_factory, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")  # the node's mode decides, as it does for a user
    built = build_loggers(cfg_factory(["logger.wandb.mode=disabled"]))
    assert kinds(start_loggers(built, "t", [], {})) == [ResumableCSVLogger]


def test_the_nodes_own_identity_wins(tmp_path):
    logger = ResumableWandbLogger(save_dir=tmp_path, name="mine", tags=[])
    try:
        assert start_loggers([logger], "t", ["run-tag"], {}, group="g", resume_from=None)
        run = logger.experiment
        assert (run.name, run.group, list(run.tags)) == ("mine", "g", [])
    finally:
        finish_wandb()
