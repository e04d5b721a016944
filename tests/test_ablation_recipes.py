"""The ablation grids in conf/experiment: what they sweep, and the recipes' own callbacks."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from alexnet.figures import read_metrics_csv
from alexnet.report.convergence import first_reaching
from alexnet.training.run import train
from conftest import CONF_DIR

FAST = [
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=false",
    "logger.wandb=null",
    "figures.enabled=false",  # no test here looks at them (tests/training/test_dashboard.py does)
]


def sweeper_params(experiment: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[f"experiment={experiment}"], return_hydra_config=True
        )
    assert cfg.hydra.launcher._target_.endswith("SubprocessLauncher")
    return dict(cfg.hydra.sweeper.params), cfg


@pytest.mark.parametrize(
    "experiment,params,model",
    [
        (
            "lrn_pool",
            {"model.lrn": "true,false", "model.pool": "overlap,nonoverlap", "seed": "0,1,2"},
            "alexnet_cifar",
        ),
        (
            "towers",
            {"tower_layout": "two_towers,one_tower_half,one_tower", "seed": "0,1,2"},
            "alexnet_cifar",
        ),
        ("cifar_lrn", {"model.lrn": "true,false", "seed": "0,1,2"}, "four_layer"),
        (
            "relu_vs_tanh",
            {"model.activation": "relu,tanh", "optim.lr": "0.0025,0.005,0.01,0.02", "seed": "0,1"},
            "four_layer",
        ),
    ],
)
def test_grids(experiment, params, model):
    found, cfg = sweeper_params(experiment)
    assert found == params
    assert cfg.model.name == model and cfg.task_name == experiment


def test_relu_vs_tanh_has_no_regularisation():
    _, cfg = sweeper_params("relu_vs_tanh")
    assert (
        cfg.optim.weight_decay == 0
        and cfg.model.lrn is False
        and cfg.aug._target_.endswith(".PlainAug")
    )


@pytest.mark.parametrize(
    "layout,towers,width",
    [("two_towers", 2, 1.0), ("one_tower_half", 1, 0.5), ("one_tower", 1, 1.0)],
)
def test_tower_layout_sets_towers_and_width_on_any_model(cfg_factory, layout, towers, width):
    for model in ("alexnet_cifar", "alexnet"):
        cfg = cfg_factory(["experiment=towers", f"tower_layout={layout}", f"model={model}"])
        assert (cfg.model.name, cfg.model.towers, cfg.model.conv_width) == (model, towers, width)


def test_relu_vs_tanh_stops_at_its_threshold_and_counts_images(cfg_factory, tmp_path):
    # a threshold every epoch meets: the job stops after its first epoch of five
    cfg = cfg_factory(
        [
            "experiment=relu_vs_tanh",
            "data=synthetic",
            "data.train_size=64",
            "data.batch_size=16",
            "trainer.max_epochs=5",
            "callbacks.stop_at_25.stopping_threshold=1.0",
            *FAST,
        ],
        output_dir=tmp_path / "run",
    )
    results = train(cfg)
    assert results["epochs"] == 1 and results["steps"] == 4
    curves = read_metrics_csv(tmp_path / "run" / "csv" / "metrics.csv")
    assert [v for _, _, v in curves["train/images_seen"]] == [64.0]
    assert first_reaching(curves, threshold=1.0) == (1, 64.0)
