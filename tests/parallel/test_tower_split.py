"""The tower split without processes: slices, state-dict conversions, configs, batch semantics.

The distributed behaviour (equivalence with the grouped net, training, checkpoints) is in the
slow tests beside this file.
"""

from __future__ import annotations

import hydra
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from alexnet.bench.towers import comm_volume
from alexnet.config.hardware import resolve_auto
from alexnet.models import AlexNet, AlexNetCifar, AlexNetTV
from alexnet.parallel.launch import (
    data_parallel_size,
    mark_rank_from_env,
    module_class,
    split_global_batch,
)
from alexnet.parallel.strategy import TowerClassifier, TowerStrategy, check_tower_world
from alexnet.parallel.towers import (
    SHARD_DIMS,
    TowerAlexNet,
    build_tower_model,
    grouped_state_dict,
    tower_state_dict,
)
from alexnet.training.module import Classifier
from conftest import CONF_DIR


def meta(cls, **kwargs):
    with torch.device("meta"):
        return cls(**kwargs)


# Figure 2, per GPU: 48 conv1 kernels on RGB; 128 conv2 kernels on its own 48 maps; 192 conv3
# kernels on all 256 maps; 192 conv4 kernels on its own 192; 128 conv5 kernels on its own 192;
# 2048 fc6 neurons on all 6x6x256; 2048 fc7 neurons on all 4096; fc8 reads its own 2048.
PAPER_TOWER_SHAPES = {
    "conv1.weight": (48, 3, 11, 11),
    "conv2.weight": (128, 48, 5, 5),
    "conv3.weight": (192, 256, 3, 3),
    "conv4.weight": (192, 192, 3, 3),
    "conv5.weight": (128, 192, 3, 3),
    "fc6.weight": (2048, 9216),
    "fc7.weight": (2048, 4096),
    "fc8.weight": (1000, 2048),
    "fc8.bias": (1000,),
}


@pytest.mark.parametrize("rank", [0, 1])
def test_each_tower_holds_the_papers_half_of_every_layer(rank):
    tower = TowerAlexNet(meta(AlexNet), rank)
    shapes = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    for name, shape in PAPER_TOWER_SHAPES.items():
        assert shapes[name] == shape, name
    assert tower.conv2.groups == tower.conv4.groups == 1  # a tower's slice is a dense conv
    assert tower.norm1.groups == 1  # each tower normalises its own maps


def test_towers_together_hold_the_grouped_net_once_plus_the_replicated_bias():
    grouped = meta(AlexNet)
    total = sum(p.numel() for r in (0, 1) for p in TowerAlexNet(grouped, r).parameters())
    assert total == 60_965_224 + 1000  # fc8's bias lives on both towers


@pytest.mark.parametrize("cls", [AlexNet, AlexNetCifar])
def test_state_dict_split_and_merge_are_exact(cls):
    torch.manual_seed(0)
    grouped = cls(num_classes=7).state_dict()  # an odd class count splits fine (fc8 by input)
    towers = [tower_state_dict(grouped, r) for r in (0, 1)]
    merged = grouped_state_dict(towers)
    assert merged.keys() == grouped.keys() == SHARD_DIMS.keys()
    for name in grouped:
        assert torch.equal(merged[name], grouped[name]), name
    # tower 1 holds the second half: conv1 kernels 48..95 (paper), fc8 columns 2048..4095
    c1, hidden = grouped["conv1.weight"].shape[0], grouped["fc8.weight"].shape[1]
    assert torch.equal(towers[1]["conv1.weight"], grouped["conv1.weight"][c1 // 2 :])
    assert torch.equal(towers[1]["fc8.weight"], grouped["fc8.weight"][:, hidden // 2 :])


def test_tower_built_from_the_grouped_net_holds_its_exact_slices():
    torch.manual_seed(0)
    grouped = AlexNetCifar()
    expected = tower_state_dict(grouped.state_dict(), 1)
    got = TowerAlexNet(grouped, 1).local_state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_merge_refuses_towers_whose_replicated_bias_differs():
    towers = [tower_state_dict(AlexNetCifar().state_dict(), r) for r in (0, 1)]
    towers[1]["fc8.bias"] = towers[1]["fc8.bias"] + 1
    with pytest.raises(ValueError, match="fc8.bias is replicated but differs"):
        grouped_state_dict(towers)


def test_same_seed_on_both_ranks_gives_two_different_towers():
    # The towers come from one grouped draw, not two copies of one tower's draw.
    towers = []
    for rank in (0, 1):
        torch.manual_seed(0)
        towers.append(build_tower_model("alexnet_cifar", rank).local_state_dict())
    assert not torch.equal(towers[0]["conv3.weight"], towers[1]["conv3.weight"])


@pytest.mark.parametrize(
    "net, message",
    [
        (lambda: meta(AlexNet, towers=1), "towers=2"),
        (lambda: meta(AlexNetTV), "towers=2"),
    ],
)
def test_tower_split_rejects_nets_without_two_towers(net, message):
    with pytest.raises(ValueError, match=message):
        TowerAlexNet(net(), 0)


def test_tower_split_rejects_bad_rank_and_world():
    with pytest.raises(ValueError, match="exactly 2 towers"):
        TowerAlexNet(meta(AlexNetCifar), 0, world_size=4)
    with pytest.raises(ValueError, match="rank=2"):
        TowerAlexNet(meta(AlexNetCifar), 2)
    with pytest.raises(ValueError, match="model.towers=2"):
        build_tower_model("alexnet_cifar", 0, towers=1)


def test_comm_volume_of_the_paper_net_from_its_shapes():
    vol = comm_volume("alexnet", num_classes=1000)
    assert vol.conv3_input == 128 * 13 * 13  # half of pool2's 256 13x13 maps
    assert vol.fc6_input == 128 * 6 * 6
    assert vol.fc7_input == 2048
    assert vol.output == 1000
    assert vol.image == 3 * 224 * 224
    assert vol.forward == 21_632 + 4_608 + 2_048 + 1_000
    assert vol.backward == 21_632 + 4_608 + 2_048


# ---- Lightning side: configs, module choice, batch semantics --------------------------------


def trainer_from(cfg_factory, overrides):
    cfg = resolve_auto(cfg_factory(overrides))  # what train() does before building the trainer
    return cfg, hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)


def test_trainer_configs_pick_their_strategy_and_module(cfg_factory):
    cfg, trainer = trainer_from(cfg_factory, ["trainer=towers", "trainer.accelerator=cpu"])
    assert isinstance(trainer.strategy, TowerStrategy)
    assert module_class(cfg.trainer) is TowerClassifier
    assert data_parallel_size(trainer) == 1  # both towers see the whole batch
    cfg, trainer = trainer_from(
        cfg_factory, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    )
    assert isinstance(trainer.strategy, DDPStrategy)
    assert module_class(cfg.trainer) is Classifier
    assert data_parallel_size(trainer) == 2
    _, trainer = trainer_from(cfg_factory, ["trainer=cpu"])
    assert isinstance(trainer.strategy, SingleDeviceStrategy)
    assert data_parallel_size(trainer) == 1


class _Data:
    batch_size = 128


@pytest.mark.parametrize("devices, per_device", [(1, 128), (2, 64), (4, 32)])
def test_global_batch_is_split_over_ddp_devices(cfg_factory, devices, per_device):
    strategy = "trainer=ddp" if devices > 1 else "trainer=cpu"
    _, trainer = trainer_from(
        cfg_factory, [strategy, "trainer.accelerator=cpu", f"trainer.devices={devices}"]
    )
    data = _Data()
    assert split_global_batch(data, trainer) == per_device == data.batch_size


def test_towers_keep_the_whole_batch(cfg_factory):
    _, trainer = trainer_from(cfg_factory, ["trainer=towers", "trainer.accelerator=cpu"])
    data = _Data()
    assert split_global_batch(data, trainer) == 128


def test_uneven_global_batch_is_a_clear_error(cfg_factory):
    _, trainer = trainer_from(
        cfg_factory, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"]
    )
    data = _Data()
    with pytest.raises(ValueError, match="data.batch_size=128 is the global batch.*multiple of 3"):
        split_global_batch(data, trainer)


def test_towers_need_two_processes():
    check_tower_world(1, 2)
    check_tower_world(2, 1)
    with pytest.raises(ValueError, match="exactly 2 processes.*trainer.devices=2"):
        check_tower_world(1, 4)


@pytest.mark.parametrize(
    "model, message",
    [
        ({"name": "alexnet_tv"}, "model=alexnet or model=alexnet_cifar"),
        ({"name": "alexnet", "towers": 1}, "model.towers=2"),
    ],
)
def test_tower_module_rejects_models_it_cannot_split(model, message):
    with pytest.raises(ValueError, match=message):
        TowerClassifier({"num_classes": 10, **model})


def test_tower_module_keeps_the_classifier_hparams():
    model = {"name": "alexnet_cifar", "num_classes": 10}
    with torch.device("meta"):
        module = TowerClassifier(model)
    assert dict(module.hparams) == {"model": model, "channels_last": False, "compile": False}


@pytest.mark.parametrize(
    "env, zero",
    [
        ({}, True),
        ({"NODE_RANK": "0"}, True),
        ({"NODE_RANK": "1"}, False),  # a second node started by hand
        ({"NODE_RANK": "1", "RANK": "0"}, True),  # RANK wins (torchrun)
    ],
)
def test_rank_zero_from_the_environment(env, zero, monkeypatch):
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 0)
    mark_rank_from_env(env)
    assert (rank_zero_only.rank == 0) is zero


@pytest.mark.parametrize(
    "trainer_overrides, refused",
    [
        (["trainer=ddp", "trainer.devices=2"], True),
        (["trainer=towers"], True),
        (["trainer=cpu"], False),
    ],
)
def test_multirun_refuses_trainers_that_relaunch_the_script(
    trainer_overrides, refused, cfg_factory
):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from alexnet.parallel.launch import check_not_multirun

    _, trainer = trainer_from(cfg_factory, [*trainer_overrides, "trainer.accelerator=cpu"])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        if refused:
            with pytest.raises(ValueError, match=r"cannot start its ranks inside a Hydra multirun"):
                check_not_multirun(trainer)
        else:
            check_not_multirun(trainer)
    finally:
        HydraConfig.instance().cfg = None


def test_ranks_get_their_own_random_streams(cfg_factory, monkeypatch):
    from alexnet.parallel.launch import RankSeed, prepare_parallel

    _, trainer = trainer_from(
        cfg_factory, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    )
    prepare_parallel(trainer, _Data())
    assert any(isinstance(c, RankSeed) for c in trainer.callbacks)

    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    draws = []
    for rank in (0, 0, 1):
        torch.manual_seed(7)  # what Lightning gives every rank
        RankSeed().setup(type("T", (), {"global_rank": rank})(), None, "fit")
        draws.append(torch.rand(3))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
