"""`trainer=towers` and `trainer=ddp` under Lightning on two CPU processes (gloo), in-process.

Each rank runs the real configs through train.py's builders (as `python -m alexnet.train`
would after Lightning's re-launch), trains a few steps on synthetic data, records the batches
it saw and its own weights, saves a checkpoint, and loads it into a freshly initialised module.
The parent then checks:

- the training equals the single-process grouped net replayed on the same global batches (the
  towers: the same batch on both ranks; DDP: the ranks' halves of each global batch);
- every rank got back bit-identical weights and momentum from the checkpoint (the pitfall: a
  distributed checkpoint merging the ranks' same-named tensors into one);
- the checkpoint loads into the single-process grouped net for eval.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from alexnet.config.entry import build_data, build_module
from alexnet.config.hardware import resolve_auto
from alexnet.parallel.launch import prepare_parallel
from alexnet.parallel.towers import grouped_state_dict
from alexnet.training.module import Classifier
from dist_helpers import free_port, start_ranks

STEPS = 3
GLOBAL_BATCH = 8


def overrides(trainer: str) -> list[str]:
    return [
        f"trainer={trainer}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "data=synthetic",
        "data.num_workers=0",
        f"data.batch_size={GLOBAL_BATCH}",
        "aug=none",
        "model=alexnet_cifar",
        "model.dropout=0.0",
        "sched=none",
    ]


class RecordBatches(L.Callback):
    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((batch[0].clone(), batch[1].clone()))


def _local(t: torch.Tensor) -> torch.Tensor:
    return (t.to_local() if hasattr(t, "to_local") else t).detach().clone()


def snapshot(module, trainer) -> dict:
    params = dict(module.net.named_parameters())
    optimizer = trainer.optimizers[0]
    return {
        "weights": {k: _local(p) for k, p in params.items()},
        "momentum": {k: _local(optimizer.state[p]["momentum_buffer"]) for k, p in params.items()},
    }


def make_trainer(cfg, callbacks=()):
    return hydra.utils.instantiate(
        cfg.trainer,
        logger=False,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=STEPS,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


def worker(rank: int, port: int, tmp: str) -> None:
    # What Lightning's launcher gives a process it started: the trainer then starts no other.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
        WORLD_SIZE="2",
        NO_ALBUMENTATIONS_UPDATE="1",
    )
    torch.set_num_threads(1)
    for trainer_name in TRAINERS:  # one after the other in the same two processes
        train_and_restore(rank, trainer_name, Path(tmp) / trainer_name)


def train_and_restore(rank: int, trainer_name: str, tmp: Path) -> None:
    from conftest import compose_config

    tmp.mkdir(exist_ok=True)
    cfg = resolve_auto(compose_config("train", overrides(trainer_name), tmp / "run"))
    L.seed_everything(cfg.seed)
    datamodule, module = build_data(cfg), build_module(cfg)
    record = RecordBatches()
    trainer = make_trainer(cfg, [record])
    prepare_parallel(trainer, datamodule)
    trainer.fit(module, datamodule=datamodule)
    ckpt = tmp / "roundtrip.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = snapshot(module, trainer)

    L.seed_everything(cfg.seed + 1)  # a different init, so a load that does nothing shows
    restored_module = build_module(cfg)
    restored_trainer = make_trainer(cfg)
    restored_trainer.fit(restored_module, datamodule=datamodule, ckpt_path=ckpt)
    torch.save(
        {
            "saved": saved,
            "restored": snapshot(restored_module, restored_trainer),
            "batches": record.batches,
            "steps": trainer.global_step,
            "restored_steps": restored_trainer.global_step,
        },
        tmp / f"rank{rank}.pt",
    )


def replay_single_process(cfg, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """The grouped net from the same seed, SGD over the same global batches, one process."""
    L.seed_everything(cfg.seed)
    build_data(cfg)  # same RNG use as the ranks before their module
    model = OmegaConf.to_container(cfg.model, resolve=True)
    module = Classifier(model=model, optimizer=hydra.utils.instantiate(cfg.optim))
    optimizer = module.configure_optimizers()
    init = {k: v.detach().clone() for k, v in module.net.named_parameters()}
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(module(x), y).backward()
        optimizer.step()
    return {k: (v.detach(), init[k]) for k, v in module.net.named_parameters()}


TRAINERS = ("towers", "ddp")


# Two processes that train under both trainers in turn (a pair each would start four)
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("parallel_training")
    start_ranks(worker, (free_port(), str(tmp)))
    return tmp


def run(trainer_name: str, trained: Path) -> tuple[list[dict], Path]:
    """The two ranks' records of the `trainer_name` training and its directory."""
    tmp = trained / trainer_name
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)], tmp


def assert_bit_identical(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs after the checkpoint round trip"


def assert_close_to(expected: dict, got: dict) -> None:
    """`got` trained like `expected` ({name: (weights, initial weights)}), up to float error.

    The ranks reduce the gradient in another order than one process does. Where a gradient sums
    many terms of both signs (a bias sums its whole output map over the batch) that rounding is
    relative to the terms, not to the small sum, so it is bounded here by 1% of the largest
    update the tensor received -- a real fault (half the batch missing, a wrong scale) moves the
    update by 50% or more.
    """
    for k, (v, init) in expected.items():
        update = (v - init).abs().max().item()
        torch.testing.assert_close(
            got[k], v, rtol=1e-4, atol=1e-2 * update, msg=lambda m, k=k: f"{k}: {m}"
        )


@pytest.mark.slow
def test_towers_train_like_the_grouped_net_and_checkpoints_restore_each_tower(trained, cfg_factory):
    ranks, tmp = run("towers", trained)
    assert ranks[0]["steps"] == ranks[1]["steps"] == STEPS
    assert ranks[0]["restored_steps"] == STEPS
    # both towers saw the same batches (the first tower's, broadcast)
    for (x0, y0), (x1, y1) in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert len(y0) == GLOBAL_BATCH  # towers are not data-parallel: the whole batch each
    for r in ranks:
        assert_bit_identical(r["saved"]["weights"], r["restored"]["weights"], "weights")
        assert_bit_identical(r["saved"]["momentum"], r["restored"]["momentum"], "momentum")
    # the towers hold different halves (a merged checkpoint would have made them equal)
    assert not torch.equal(
        ranks[0]["restored"]["weights"]["conv3.weight"],
        ranks[1]["restored"]["weights"]["conv3.weight"],
    )

    merged = grouped_state_dict([r["saved"]["weights"] for r in ranks])
    cfg = cfg_factory(overrides("towers"))
    assert_close_to(replay_single_process(cfg, ranks[0]["batches"]), merged)

    # the checkpoint is the grouped net's: it loads for eval without the towers
    grouped = Classifier.load_from_checkpoint(tmp / "roundtrip.ckpt", map_location="cpu")
    assert grouped.net.conv2.groups == 2
    assert_bit_identical(merged, dict(grouped.net.state_dict()), "grouped load")


@pytest.mark.slow
def test_ddp_step_equals_one_process_on_the_global_batch_and_checkpoints_restore(
    trained, cfg_factory
):
    ranks, tmp = run("ddp", trained)
    assert ranks[0]["steps"] == STEPS
    # each rank got half of every global batch, different images
    global_batches = []
    for (x0, y0), (x1, y1) in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True):
        assert len(y0) == len(y1) == GLOBAL_BATCH // 2
        assert not torch.equal(x0, x1)
        global_batches.append((torch.cat([x0, x1]), torch.cat([y0, y1])))
    # DDP keeps the replicas equal, and their SGD steps are those of one process on 2x the data
    assert_bit_identical(ranks[0]["saved"]["weights"], ranks[1]["saved"]["weights"], "replicas")
    cfg = cfg_factory(overrides("ddp"))
    assert_close_to(replay_single_process(cfg, global_batches), ranks[0]["saved"]["weights"])
    for r in ranks:
        assert_bit_identical(r["saved"]["weights"], r["restored"]["weights"], "weights")
        assert_bit_identical(r["saved"]["momentum"], r["restored"]["momentum"], "momentum")
    loaded = Classifier.load_from_checkpoint(tmp / "roundtrip.ckpt", map_location="cpu")
    assert_bit_identical(ranks[0]["saved"]["weights"], dict(loaded.net.state_dict()), "load")
