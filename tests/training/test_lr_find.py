"""`lr_find=true`: the learning-rate range test runs instead of training and leaves its plot and
its suggestion in the run dir."""

from __future__ import annotations

import json

import pytest

from alexnet.config import ConfigError
from alexnet.config.validate import validate_config
from alexnet.train import main
from alexnet.training import lr_find
from alexnet.training.multirun import SWEEP_DIR_ENV
from conftest import compose_config
from tiny_run import TINY, one_thread  # noqa: F401


def test_lr_find_writes_the_plot_and_the_suggestion_and_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(lr_find, "STEPS", 30)  # enough points for a suggestion, in seconds
    cfg = compose_config("train", [*TINY, "lr_find=true"], tmp_path)
    record = main(cfg)

    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggested_lr"] == record["suggested_lr"]
    assert lr_find.MIN_LR <= saved["suggested_lr"] <= lr_find.MAX_LR
    assert saved["configured_lr"] == cfg.optim.lr
    assert 12 <= saved["steps"] == len(saved["lr"]) == len(saved["loss"]) <= 30
    assert saved["lr"] == sorted(saved["lr"])  # the rate only grows
    png = (tmp_path / "lr_find.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    # a range test, not a training run: no record of one, no checkpoints, no temporary files
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "checkpoints").exists()
    assert not list(tmp_path.glob(".lr_find_*.ckpt"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["debug=fdr"], "lr_find=True finds nothing under trainer.fast_dev_run"),
        (["ckpt_path=some/last.ckpt"], "lr_find=True tests rates from the initial weights"),
    ],
)
def test_lr_find_refuses_what_it_cannot_do(overrides, message, tmp_path):
    cfg = compose_config("train", [*TINY, "lr_find=true", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_lr_find_in_a_sweep_job_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(SWEEP_DIR_ENV, str(tmp_path))  # what the launcher sets for each job
    cfg = compose_config("train", [*TINY, "lr_find=true"], tmp_path / "job")
    with pytest.raises(ConfigError, match="lr_find=True stops after the range test"):
        validate_config(cfg)
