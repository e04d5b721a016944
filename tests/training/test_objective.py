"""`optimized_metric`: a run returns one number, so that Hydra sweepers that optimise (Optuna, ...)
can drive the train entry and the subprocess launcher."""

from __future__ import annotations

import json
import math

from omegaconf import OmegaConf

from alexnet.train import main
from alexnet.training.multirun import objective
from conftest import compose_config
from hydra_plugins.alexnet_launcher.subprocess_launcher import SubprocessLauncher
from tiny_run import TINY, one_thread  # noqa: F401


def test_objective_is_the_results_or_the_one_metric():
    results = {"status": "ok", "metrics": {"val/best_top1_err": 0.25}}
    assert objective(results, None) is results  # no metric asked for: the whole record
    assert objective(results, "val/best_top1_err") == 0.25
    assert math.isnan(objective(results, "val/best_top5_err"))  # never logged: a failed trial
    assert math.isnan(objective({"status": "failed", "metrics": {}}, "val/best_top1_err"))
    assert math.isnan(objective(None, "val/best_top1_err"))


def test_a_run_that_did_not_finish_returns_objective_if_failed():
    failed = {"status": "failed", "error": "NonFiniteLoss: train/loss is nan", "metrics": {}}
    assert objective(failed, "val/best_top1_err", 1.0) == 1.0
    assert objective(None, "val/best_top1_err", 1.0) == 1.0  # died before writing results.json
    # a finished run that never logged the metric is a misconfiguration, not a bad trial
    assert math.isnan(objective({"status": "ok", "metrics": {}}, "val/best_top1_err", 1.0))


def test_the_launcher_returns_objective_if_failed_for_a_failed_job():
    launcher = SubprocessLauncher()
    launcher.config = OmegaConf.create(
        {"optimized_metric": "val/best_top1_err", "objective_if_failed": 1.0}
    )
    assert launcher._objective({"status": "failed", "metrics": {}}) == 1.0
    assert launcher._objective({"status": "ok", "metrics": {"val/best_top1_err": 0.3}}) == 0.3


def test_the_train_entry_returns_the_optimized_metric(tmp_path):
    overrides = [*TINY, "trainer.max_epochs=1", "optimized_metric=val/best_top1_err"]
    value = main(compose_config("train", overrides, tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert value == saved["metrics"]["val/best_top1_err"] and 0 <= value <= 1
