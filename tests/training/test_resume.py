"""Exact resume: a run stopped anywhere (crash, SIGKILL, SIGTERM) and resumed from last.ckpt ends
with bit-identical weights to one that never stopped (CPU, deterministic mode).

The setup (tests/helpers/tiny_run.py) is small but exercises everything that has to be
restored: shuffled order, random crops, flips and PCA lighting, dropout, momentum, and a plateau
schedule with patience 0 that divides the learning rate at epoch ends (one of them in the epoch a
run is resumed in).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

import alexnet.training.run as train_module
from alexnet.config.entry import build_data
from alexnet.data.device_loader import DeviceLoader
from alexnet.training.run import train
from conftest import compose_config
from tiny_run import EPOCHS, PER_EPOCH, TINY, one_thread  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
EVERY = 4
STEPS = PER_EPOCH * EPOCHS
# The same 30 steps as a step-limited run (Lightning resumes those differently at epoch ends).
BY_STEPS = ["trainer.max_epochs=-1", f"+trainer.max_steps={STEPS}"]
BASE = [*TINY, f"callbacks.last.every_n_steps={EVERY}"]
# One intra-op thread in this process and in the subprocesses: float reductions then match bit
# for bit, and the tiny net runs no slower (on a busy machine much faster) than with two.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(a: Path, b: Path) -> None:
    ref, got = load(a), load(b)
    assert got["global_step"] == ref["global_step"] == STEPS
    for key, value in ref["state_dict"].items():
        assert torch.equal(value, got["state_dict"][key]), key
    for key, value in ref["optimizer_states"][0]["state"].items():
        assert torch.equal(
            value["momentum_buffer"], got["optimizer_states"][0]["state"][key]["momentum_buffer"]
        )
    assert got["lr_schedulers"] == ref["lr_schedulers"]


class Crash(L.Callback):
    """A crash at the start of a given step (the process dies; nothing is saved)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def run(out: Path, extra=(), crash_at: int | None = None, monkeypatch=None) -> dict | None:
    cfg = compose_config("train", [*BASE, *extra], out)
    if crash_at is not None:
        build = train_module.build_callbacks
        monkeypatch.setattr(
            train_module, "build_callbacks", lambda cfg: [*build(cfg), Crash(crash_at)]
        )
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(cfg)
        monkeypatch.undo()
        return None
    return train(cfg)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    run(out)
    return out / "checkpoints" / "last.ckpt"


def results(last_ckpt: Path) -> dict:
    return json.loads((last_ckpt.parents[1] / "results.json").read_text())


def test_uninterrupted_run_checkpoints_as_configured(reference):
    state = load(reference)
    assert state["global_step"] == STEPS
    lr = state["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr < 0.01  # the plateau schedule did act; its state must survive a resume
    assert {"rng", "plateau_pending"} <= set(state["callbacks"]["ResumeCheckpoint"])
    assert state["SyntheticDataModule"]["train_order"]["seed"] == 7


def test_crash_mid_epoch_then_resume_is_bit_identical(reference, tmp_path, monkeypatch):
    run(tmp_path / "a", crash_at=14, monkeypatch=monkeypatch)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert load(last)["global_step"] == 12  # the last step checkpoint, 2 batches into epoch 1
    before = sorted((tmp_path / "a" / "checkpoints").glob("best-*.ckpt"))
    run(tmp_path / "b", [f"ckpt_path={last}"])
    assert_same_training_state(reference, tmp_path / "b" / "checkpoints" / "last.ckpt")
    resumed = results(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert resumed["resumed_from"] == str(last) and resumed["steps"] == STEPS
    # the best checkpoint is that of the whole run, not of its resumed part
    ref = results(reference)
    assert resumed["metrics"]["val/best_top1_err"] == ref["metrics"]["val/best_top1_err"]
    assert Path(resumed["best_ckpt"]).name == Path(ref["best_ckpt"]).name
    assert sorted((tmp_path / "a" / "checkpoints").glob("best-*.ckpt")) == before  # kept


@pytest.mark.parametrize("limit", ["epochs", "steps"])
def test_resume_from_epoch_boundary_is_bit_identical(limit, reference, tmp_path, monkeypatch):
    extra = BY_STEPS if limit == "steps" else []
    run(tmp_path / "a", extra, crash_at=11, monkeypatch=monkeypatch)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    state = load(last)
    assert state["global_step"] == PER_EPOCH  # the boundary between epochs 0 and 1
    # By epochs it is written at the end of epoch 0, before Lightning steps the plateau
    # schedule, which the resumed run then does; by steps at the start of epoch 1.
    assert bool(state["callbacks"]["ResumeCheckpoint"]["plateau_pending"]) == (limit == "epochs")
    run(tmp_path / "b", [*extra, f"ckpt_path={last}"])
    assert_same_training_state(reference, tmp_path / "b" / "checkpoints" / "last.ckpt")


def test_step_limited_run_matches_and_resumes_mid_epoch(reference, tmp_path, monkeypatch):
    run(tmp_path / "a", BY_STEPS, crash_at=18, monkeypatch=monkeypatch)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert load(last)["global_step"] == 16
    run(tmp_path / "b", [*BY_STEPS, f"ckpt_path={last}"])
    assert_same_training_state(reference, tmp_path / "b" / "checkpoints" / "last.ckpt")


# The GPU-resident loader (alexnet.data.device_loader), here on the CPU: its order, draws and
# mid-epoch position must resume as exactly as the DataLoader's.
GPU_RESIDENT = ["+data.gpu_resident=true"]


@pytest.fixture(scope="module")
def gpu_resident_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference_gpu_resident")
    dm = build_data(compose_config("train", [*BASE, *GPU_RESIDENT], out))
    dm.setup("fit")
    assert isinstance(dm.train_dataloader(), DeviceLoader)
    run(out, GPU_RESIDENT)
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("crash_at, saved", [(14, 12), (11, PER_EPOCH)])
def test_gpu_resident_crash_then_resume_is_bit_identical(
    crash_at, saved, gpu_resident_reference, tmp_path, monkeypatch
):
    run(tmp_path / "a", GPU_RESIDENT, crash_at=crash_at, monkeypatch=monkeypatch)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert load(last)["global_step"] == saved  # mid-epoch 1 / the boundary of epochs 0 and 1
    run(tmp_path / "b", [*GPU_RESIDENT, f"ckpt_path={last}"])
    assert_same_training_state(gpu_resident_reference, tmp_path / "b" / "checkpoints" / "last.ckpt")


def start(out: Path, extra=()) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alexnet.train", *BASE, *extra, f"hydra.run.dir={out}"],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a scheduler's job
    )


def wait_for_checkpoint(proc: subprocess.Popen, path: Path, ready, timeout: float = 400) -> int:
    """Poll `path` until `ready(global_step)`; returns that step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            step = torch.load(path, weights_only=True, mmap=True)["global_step"]
        except (FileNotFoundError, RuntimeError, EOFError):
            step = None
        if step is not None and ready(step):
            return step
        time.sleep(0.02)
    proc.kill()
    raise TimeoutError(f"no checkpoint at {path}")


# ~10 s on 2 busy cores: a training process started, killed and resumed here
@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(reference, tmp_path):
    proc = start(tmp_path / "a")
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    wait_for_checkpoint(proc, last, lambda step: step > PER_EPOCH and step % PER_EPOCH)
    proc.kill()  # SIGKILL: no handler runs, nothing is saved
    proc.wait(30)
    step = load(last)["global_step"]  # whatever was on disk is a complete checkpoint
    assert step % PER_EPOCH and step < STEPS
    # resumed here (one thread, as the killed process had): the kill is what needs a process
    run(tmp_path / "b", [f"ckpt_path={last}"])
    assert_same_training_state(reference, tmp_path / "b" / "checkpoints" / "last.ckpt")


# ~10 s on 2 busy cores: a training process started, stopped and resumed here
@pytest.mark.slow
def test_sigterm_saves_exits_143_and_resumes_bit_identical(reference, tmp_path):
    # Two DataLoader workers, and the signal to the whole process group as SLURM sends it: the
    # workers ignore it, the main process finishes its batch, saves and exits.
    proc = start(tmp_path / "a", ["data.num_workers=2"])
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    wait_for_checkpoint(proc, last, lambda step: step >= EVERY)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(120) == 143
    stderr = proc.stderr.read()
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["status"] == "preempted" and results["resume_ckpt"] == str(last)
    step = load(last)["global_step"]
    assert results["steps"] == step < STEPS
    assert stderr.strip().splitlines()[-1] == (
        f"preempted: SIGTERM at global step {step}; resume with ckpt_path={last}"
    )
    assert "Traceback" not in stderr
    # resumed here (one thread, as the killed process had): the kill is what needs a process
    run(tmp_path / "b", [f"ckpt_path={last}"])
    assert_same_training_state(reference, tmp_path / "b" / "checkpoints" / "last.ckpt")


# ---- csv/metrics.csv follows the checkpoint when a run resumes in its own directory ----------
# (what an ablation grid's interrupted cell does: alexnet.training.multirun.resume_point)
CSV = ["logger=csv", "trainer.log_every_n_steps=1"]  # a row every step: some after the checkpoint
TIMING = "train/img_per_s"  # a measurement of the machine, not of training


def metrics_rows(run_dir: Path) -> list[dict]:
    import csv

    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k != TIMING} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def csv_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference_csv")
    run(out, CSV)
    return out


@pytest.mark.parametrize("crash_at, saved", [(14, 12), (11, PER_EPOCH)])
def test_resumed_in_place_the_metrics_file_equals_an_uninterrupted_runs(
    crash_at, saved, csv_reference, tmp_path, monkeypatch
):
    run(tmp_path, CSV, crash_at=crash_at, monkeypatch=monkeypatch)
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = load(last)
    assert state["global_step"] == saved  # mid-epoch 1 / the end of epoch 0
    assert state["callbacks"]["ResumeCheckpoint"]["csv_rows"] > 0
    assert len(metrics_rows(tmp_path)) > state["callbacks"]["ResumeCheckpoint"]["csv_rows"]
    run(tmp_path, [*CSV, f"ckpt_path={last}"])
    assert metrics_rows(tmp_path) == metrics_rows(csv_reference)
    assert_same_training_state(csv_reference / "checkpoints" / "last.ckpt", last)
    # training time adds up over the attempts
    before = state["callbacks"]["ResumeCheckpoint"]["train_time_s"]
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert 0 < before < resumed["train_time_s"]


def test_a_fresh_run_in_a_used_directory_starts_an_empty_metrics_file(csv_reference, tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,stale\n0,0,1\n")
    run(tmp_path, CSV)
    assert metrics_rows(tmp_path) == metrics_rows(csv_reference)
