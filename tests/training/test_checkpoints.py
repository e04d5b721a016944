"""Checkpoints load with weights_only=True everywhere: a file carrying a pickle payload is refused
with one clear line, and nothing in it runs."""

from __future__ import annotations

import pickle

import pytest
import torch

from alexnet.config import ConfigError
from alexnet.eval import evaluate
from alexnet.training.checkpoints import CheckpointError, check_checkpoint, load_checkpoint
from alexnet.training.module import Classifier
from alexnet.training.run import train
from conftest import compose_config
from tiny_run import TINY, one_thread  # noqa: F401


class Payload:
    """Unpickling this creates (opens for writing) the file `path`: stands for any code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def evil(tmp_path):
    """A checkpoint that looks like ours and carries a payload; and the file it would create."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save(
        {
            "state_dict": {"net.fc8.weight": torch.zeros(2, 2)},
            "loops": {},
            "optimizer_states": [],
            "hyper_parameters": {"model": {"name": "alexnet_cifar"}},
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": "2.6.6",
            "note": Payload(str(marker)),
        },
        path,
    )
    return path, marker


REFUSED = r"holds Python objects that loading it would run \(io.open\); refused and nothing was"


def test_payload_is_armed_for_a_plain_unpickler(evil):
    path, marker = evil
    torch.load(path, weights_only=False)  # what an unsafe loader does
    assert marker.exists()


def test_resume_refuses_it_before_anything_runs(evil, tmp_path):
    path, marker = evil
    with pytest.raises(ConfigError, match=REFUSED):
        train(compose_config("train", [*TINY, f"ckpt_path={path}"], tmp_path / "run"))
    assert not marker.exists()


def test_eval_refuses_it(evil, tmp_path):
    path, marker = evil
    cfg = compose_config("eval", ["data=synthetic", f"ckpt_path={path}"], tmp_path / "eval")
    with pytest.raises(ConfigError, match=REFUSED):
        evaluate(cfg)
    assert not marker.exists()


def test_every_loader_we_use_refuses_it(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match=REFUSED):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=REFUSED):
        check_checkpoint(path, "eval")
    with pytest.raises(pickle.UnpicklingError):  # what eval.py and Lightning's loading call
        Classifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert not marker.exists()


def test_our_own_checkpoints_need_no_allow_list(tmp_path):
    out = tmp_path / "run"
    train(compose_config("train", [*TINY, "trainer.max_epochs=1"], out))
    for path in (out / "checkpoints").glob("*.ckpt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        state = check_checkpoint(path, "resume")
        assert {"rng", "plateau_pending"} <= set(state["callbacks"]["ResumeCheckpoint"])
