"""The debug presets people reach for: profiler (where a step's time goes) and anomaly (which op
made a NaN). Each composes, passes the preflight and does what it says on a tiny run."""

from __future__ import annotations

import pytest
import torch

from alexnet.config.validate import validate_config
from alexnet.training.run import train
from conftest import compose_config

TINY = [
    "data=synthetic",
    "data.train_size=32",
    "data.val_size=8",
    "data.test_size=8",
    "data.batch_size=8",
    "data.num_workers=0",
    "model=four_layer",
    "trainer.accelerator=cpu",
    "logger=none",
    "callbacks.progress_bar=false",
    "figures.enabled=false",
]


@pytest.mark.parametrize("preset", ["fdr", "limit", "overfit", "profiler", "anomaly"])
def test_every_debug_preset_passes_the_preflight(preset, cfg_factory):
    # the default network: overfit turns its dropout off (four_layer has none)
    validate_config(cfg_factory([*TINY, "model=alexnet_cifar", f"debug={preset}"]))


def test_profiler_writes_its_table_into_the_run_dir(tmp_path):
    cfg = compose_config("train", [*TINY, "debug=profiler"], tmp_path)
    train(cfg)
    text = (tmp_path / "fit-profile.txt").read_text()
    assert "FIT Profiler Report" in text and "run_training_batch" in text


def test_anomaly_detection_is_on_during_training(tmp_path, monkeypatch):
    import lightning as L

    import alexnet.training.run as train_module

    seen = []

    class Probe(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            seen.append(torch.is_anomaly_enabled())

    build = train_module.build_callbacks
    monkeypatch.setattr(train_module, "build_callbacks", lambda c: [*build(c), Probe()])
    overrides = [*TINY, "debug=anomaly", "trainer.max_epochs=1", "test=false"]
    train(compose_config("train", overrides, tmp_path))
    assert seen and all(seen)
    assert not torch.is_anomaly_enabled()  # only during the run
