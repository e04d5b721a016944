"""A NaN loss stops the run naming the step, after saving the state before it, or is skipped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

import alexnet.training.run as train_module
from alexnet.training.module import Classifier
from alexnet.training.nonfinite import NonFiniteLoss
from alexnet.training.run import train
from conftest import compose_config
from tiny_run import TINY, one_thread  # noqa: F401

BAD_STEP = 13  # epoch 1, batch 3


def poison(monkeypatch) -> None:
    """The loss of global step BAD_STEP becomes NaN, as after an overflow or a corrupt batch."""
    original = Classifier.training_step

    def training_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * math.nan if self.trainer.global_step == BAD_STEP else loss

    monkeypatch.setattr(Classifier, "training_step", training_step)


@pytest.fixture
def poisoned(monkeypatch):
    poison(monkeypatch)


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_nan_stops_with_the_step_and_saves_the_state_before_it(poisoned, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss) as caught:
        train(compose_config("train", TINY, out))
    last = out / "checkpoints" / "last.ckpt"
    message = str(caught.value)
    assert message.startswith(
        f"train/loss is nan at global step {BAD_STEP} (epoch 1, batch 3); "
        f"the weights before it are saved in {last}"
    )
    assert "callbacks.nonfinite.mode=skip" in message and "\n" not in message
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == BAD_STEP
    assert all(torch.isfinite(w).all() for w in state["state_dict"].values())
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "nonfinite_loss" and results["error"] == message
    assert results["resume_ckpt"] == str(last) and results["steps"] == BAD_STEP


class Snapshots(L.Callback):
    """The weights at the start of every step."""

    def __init__(self) -> None:
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.at[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}


def train_skipping(overrides, out, monkeypatch) -> dict:
    """A poisoned `callbacks.nonfinite.mode=skip` run: checks that only the bad step was skipped
    and that it changed nothing (the next step changes the weights again); returns results.json's
    dict. Its last.ckpt is the reference of the resume tests below."""
    poison(monkeypatch)
    snapshots = Snapshots()
    build = train_module.build_callbacks
    monkeypatch.setattr(train_module, "build_callbacks", lambda c: [*build(c), snapshots])
    results = train(compose_config("train", [*overrides, "callbacks.nonfinite.mode=skip"], out))
    assert results["status"] == "ok" and results["nonfinite_skipped"] == [BAD_STEP]
    before, after = snapshots.at[BAD_STEP], snapshots.at[BAD_STEP + 1]
    assert all(torch.equal(before[k], after[k]) for k in before)  # the bad step changed nothing
    assert not all(torch.equal(after[k], snapshots.at[BAD_STEP + 2][k]) for k in after)
    return results


# Each skip run serves two tests: one checks the run itself, one resumes a stopped run and
# compares its end with this run's (a training less each, ~4 s on 2 busy cores).
@pytest.fixture(scope="module")
def skip_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("skip")
    with pytest.MonkeyPatch.context() as monkeypatch:
        train_skipping(TINY, out, monkeypatch)
    return out


def test_skip_leaves_the_weights_untouched_and_counts(skip_run):
    assert json.loads((skip_run / "results.json").read_text())["nonfinite_skipped"] == [BAD_STEP]


def test_resuming_the_stopped_run_with_skip_equals_skipping_from_the_start(
    skip_run, poisoned, tmp_path
):
    with pytest.raises(NonFiniteLoss):
        train(compose_config("train", TINY, tmp_path / "a"))
    skip = [*TINY, "callbacks.nonfinite.mode=skip"]
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    train(compose_config("train", [*skip, f"ckpt_path={last}"], tmp_path / "b"))
    resumed = weights(tmp_path / "b" / "checkpoints" / "last.ckpt")
    straight = weights(skip_run / "checkpoints" / "last.ckpt")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


# The device path: a fused optimizer skips the bad step's update itself (its `found_inf`), and
# the host reads the flags every `log_every_n_steps` steps instead of syncing on every step.
FUSED = [*TINY, "optim.fused=true", "trainer.log_every_n_steps=4"]


class Reads(L.Callback):
    """Counts how often the guard read its flags on the host, and the flags it read."""

    def __init__(self, guard_cls) -> None:
        self.reads, self.flags = 0, 0
        original = guard_cls._read

        def read(guard):
            self.reads += bool(guard._pending)
            self.flags += len(guard._pending)
            return original(guard)

        self.patch = read


@pytest.fixture(scope="module")
def fused_skip_run(tmp_path_factory) -> tuple[Path, int, Reads]:
    from alexnet.training.nonfinite import NonFiniteGuard

    out = tmp_path_factory.mktemp("fused_skip")
    reads = Reads(NonFiniteGuard)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(NonFiniteGuard, "_read", reads.patch)
        steps = train_skipping(FUSED, out, monkeypatch)["steps"]
    return out, steps, reads


def test_fused_skip_reads_flags_at_log_steps_only(fused_skip_run):
    _, steps, reads = fused_skip_run
    assert reads.flags == steps - 1  # every step but the first (host path) left a device flag
    # reads at steps 4, 8, ... and at the 3 epoch ends, never one per step
    assert reads.reads <= steps // 4 + 3 < steps


def test_fused_stop_skips_the_bad_step_and_resumes_like_skip(fused_skip_run, poisoned, tmp_path):
    out = tmp_path / "a"
    with pytest.raises(NonFiniteLoss) as caught:
        train(compose_config("train", FUSED, out))
    last = out / "checkpoints" / "last.ckpt"
    stop = caught.value
    assert stop.step == BAD_STEP and stop.stopped_at == 16  # the next batch start at a 4th step
    assert str(stop).startswith(
        f"train/loss is nan at global step {BAD_STEP} (epoch 1, batch 3); its update was skipped "
        f"and the run stopped at step 16; the weights are saved in {last}"
    )
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 16
    assert all(torch.isfinite(w).all() for w in state["state_dict"].values())
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "nonfinite_loss" and results["nonfinite_skipped"] == [BAD_STEP]
    # The saved state is the skip run's at step 16: resuming it with skip ends where skip does.
    skip = [*FUSED, "callbacks.nonfinite.mode=skip"]
    train(compose_config("train", [*skip, f"ckpt_path={last}"], tmp_path / "b"))
    resumed = weights(tmp_path / "b" / "checkpoints" / "last.ckpt")
    straight = weights(fused_skip_run[0] / "checkpoints" / "last.ckpt")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
