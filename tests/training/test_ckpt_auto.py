"""`ckpt_path=auto`: a run started again in its own directory continues where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

import alexnet.training.run as train_module
from alexnet.training.run import train
from conftest import compose_config
from tiny_run import EPOCHS, PER_EPOCH, TINY, one_thread  # noqa: F401

AUTO = [*TINY, "callbacks.last.every_n_steps=4", "ckpt_path=auto"]


class Crash(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 14:
            raise RuntimeError("simulated crash")


def test_auto_resumes_a_stopped_run_and_leaves_a_finished_one_alone(tmp_path, monkeypatch):
    build = train_module.build_callbacks
    with monkeypatch.context() as m:
        m.setattr(train_module, "build_callbacks", lambda cfg: [*build(cfg), Crash()])
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(compose_config("train", AUTO, tmp_path))  # an empty dir: starts afresh
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 12

    results = train(compose_config("train", AUTO, tmp_path))  # requeued: the same command
    assert results["status"] == "ok" and results["resumed_from"] == str(last)
    assert results["steps"] == PER_EPOCH * EPOCHS
    assert results["config"]["ckpt_path"] == str(last)
    assert not (tmp_path / "attempts").exists()  # there was no record to set aside

    def no_training(cfg):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "build_data", no_training)
    again = train(compose_config("train", AUTO, tmp_path))
    assert again == json.loads((tmp_path / "results.json").read_text())


def test_auto_starts_afresh_after_a_failure_of_its_own_and_keeps_that_attempt(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"not resumed")
    failed = {"status": "failed", "error": "NonFiniteLoss: loss is nan at step 3"}
    (tmp_path / "results.json").write_text(json.dumps(failed))
    results = train(compose_config("train", [*AUTO, "trainer.max_epochs=1"], tmp_path))
    assert results["status"] == "ok" and results["resumed_from"] is None
    kept = Path(tmp_path / "attempts" / "1")
    assert json.loads((kept / "results.json").read_text()) == failed
    assert (kept / "checkpoints" / "last.ckpt").read_bytes() == b"not resumed"


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logged = [o for o in AUTO if o != "logger=none"]  # the default loggers: CSV and W&B
    build = train_module.build_callbacks
    with monkeypatch.context() as m:
        m.setattr(train_module, "build_callbacks", lambda cfg: [*build(cfg), Crash()])
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(compose_config("train", logged, tmp_path))
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    run_id = state["callbacks"]["ResumeCheckpoint"]["wandb_id"]
    assert run_ids(tmp_path) == [run_id]

    train(compose_config("train", logged, tmp_path))
    assert run_ids(tmp_path) == [run_id, run_id]


def run_ids(run_dir: Path) -> list[str]:
    """The W&B run id of each offline run dir, from its `run-<id>.wandb` log: the dir's name
    gains a `-1` when two attempts start within the same second."""
    logs = [next(d.glob("run-*.wandb")) for d in (run_dir / "wandb").glob("offline-run-*")]
    return [log.stem.removeprefix("run-") for log in logs]
