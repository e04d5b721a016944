"""VGG end to end through the real configs: train, dense / multi-crop evaluation of the checkpoint,
initialising a deeper net from net A (`model.init_from=`), and the `vgg_lrn` experiment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.config.entry import build_data, build_module
from alexnet.data.augment.vgg import VGGDenseEval, mean_rgb_from_stats
from alexnet.eval import evaluate
from alexnet.report import write_report
from alexnet.training.module import Classifier
from alexnet.training.run import train
from conftest import compose_config

FAST = [
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=false",
    "figures.enabled=false",  # no test here looks at them (tests/training/test_dashboard.py does)
]
TINY_VGG = ["model=vgg_cifar", "model.width=0.25", "aug=vgg_cifar"]


def cifar(folder: Path) -> list[str]:
    return [f"paths.data_dir={folder}", "data.batch_size=16", "data.val_size=40"]


@pytest.fixture(scope="module")
def net_a_run(cifar_folder, tmp_path_factory) -> dict:
    """A tiny VGG-A trained for a few steps on the CIFAR folder; its results.json."""
    out = tmp_path_factory.mktemp("vgg_a")
    cfg = compose_config(
        "train",
        [
            *TINY_VGG,
            "debug=limit",
            "logger.wandb=null",
            *FAST,
            *cifar(cifar_folder),
            "trainer.limit_test_batches=1.0",
        ],
        out,
    )
    return train(cfg)


def evaluate_with(ckpt: str, cifar_folder: Path, out: Path, *overrides: str) -> dict:
    # fp32: these tests compare formulations (dense vs FC), which bf16 would round differently
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={ckpt}",
            "aug=vgg_cifar",
            *FAST[:2],
            *cifar(cifar_folder),
            "trainer.precision=32-true",
            *overrides,
        ],
        out,
    )
    return evaluate(cfg)


def test_vgg_cifar_trains_and_tests_densely(net_a_run):
    assert net_a_run["status"] == "ok" and net_a_run["steps"] == 8
    config = net_a_run["config"]
    assert config["model"]["name"] == "vgg_cifar" and config["aug"]["eval"] == "dense"
    metrics = net_a_run["metrics"]
    assert 0.0 <= metrics["test/top1_err"] <= 1.0 and np.isfinite(metrics["test/loss"])
    module = Classifier.load_from_checkpoint(net_a_run["best_ckpt"], map_location="cpu")
    assert "init_from" not in module.hparams.model  # a training choice, not part of the net


def test_dense_eval_equals_fc_form_through_eval_path(net_a_run, cifar_folder, tmp_path):
    # At Q = 32 the score map is 1x1: dense evaluation (fc layers as convolutions, plus the
    # mirror image) must give exactly what the FC path gives on the crop and its mirror, here
    # multi-crop with every crop of the 32x32 image being the image itself.
    ckpt = net_a_run["best_ckpt"]
    dense = evaluate_with(
        ckpt, cifar_folder, tmp_path / "dense", "aug.eval=dense", "aug.eval_scale=32"
    )
    crops = evaluate_with(
        ckpt, cifar_folder, tmp_path / "crops", "aug.eval=multi_crop", "aug.eval_scale=32"
    )
    assert dense["eval"] == "dense" and crops["eval"] == "multi_crop"
    for key in ("test/top1_err", "test/top5_err"):
        assert dense["metrics"][key] == crops["metrics"][key]
    assert dense["metrics"]["test/loss"] == pytest.approx(crops["metrics"]["test/loss"], rel=1e-4)


def test_dense_eval_matches_a_direct_computation(net_a_run, cifar_folder, tmp_path):
    # Two test scales, whole images: the errors are what dense_scores gives image by image.
    ckpt = net_a_run["best_ckpt"]
    scored = evaluate_with(
        ckpt, cifar_folder, tmp_path / "eval", "aug.eval=dense", "aug.eval_scale=[36,48]"
    )
    json.loads((tmp_path / "eval" / "eval.json").read_text())  # written, valid
    dm = build_data(
        compose_config("eval", ["aug=vgg_cifar", *FAST[:2], *cifar(cifar_folder)], tmp_path / "dm")
    )
    images, labels = dm.arrays("test")
    net = Classifier.load_from_checkpoint(ckpt, map_location="cpu").net.eval()
    preset = VGGDenseEval(mean_rgb_from_stats(dm.stats()), scale=[36, 48])
    views = [preset(img) for img in images]  # CIFAR images are square: one size per scale
    with torch.no_grad():
        probs = sum(net.dense_scores(torch.stack([v[s] for v in views])) for s in (0, 1)) / 2
    top1_err = (probs.argmax(1) != torch.from_numpy(labels)).float().mean().item()
    assert scored["metrics"]["test/top1_err"] == pytest.approx(top1_err, abs=1e-6)


def test_dense_eval_of_a_network_without_it_is_one_clear_error(cfg_factory, cifar_folder):
    module = build_module(cfg_factory(["model=alexnet_cifar", *cifar(cifar_folder)]))
    with pytest.raises(ValueError, match="aug.eval=dense needs .* vgg or vgg_cifar"):
        module([torch.zeros(3, 36, 36)])


# -- section 3.1: a deeper net from net A --------------------------------------------------------
def test_init_from_a_checkpoint_in_the_train_config(net_a_run, cfg_factory, cifar_folder):
    a_state = torch.load(net_a_run["best_ckpt"], map_location="cpu", weights_only=True)
    a_state = a_state["state_dict"]
    cfg = cfg_factory(
        [
            *TINY_VGG,
            "model.config=D",
            f"model.init_from={net_a_run['best_ckpt']}",
            *cifar(cifar_folder),
        ]
    )
    torch.manual_seed(0)
    module = build_module(cfg)
    torch.manual_seed(0)
    fresh = build_module(cfg_factory([*TINY_VGG, "model.config=D", *cifar(cifar_folder)]))
    copied = {
        f"net.features.{c}.{p}"
        for c in ("conv1_1", "conv2_1", "conv3_1", "conv3_2")
        for p in ("weight", "bias")
    }
    copied |= {f"net.{fc}.{p}" for fc in ("fc6", "fc7", "fc8") for p in ("weight", "bias")}
    state, fresh_state = module.state_dict(), fresh.state_dict()
    for name, value in state.items():
        if not name.startswith("net."):
            continue
        if name in copied:
            assert torch.equal(value, a_state[name]), name
        else:  # everything else as freshly initialised (same seed, same draws)
            assert torch.equal(value, fresh_state[name]), name
    assert "init_from" not in module.hparams.model


def test_train_with_init_from_runs(net_a_run, cfg_factory, cifar_folder):
    cfg = cfg_factory(
        [
            *TINY_VGG,
            "model.config=B",
            f"model.init_from={net_a_run['best_ckpt']}",
            "debug=fdr",
            *FAST,
            *cifar(cifar_folder),
        ]
    )
    results = train(cfg)
    assert results["status"] == "ok"
    assert results["config"]["model"]["init_from"] == net_a_run["best_ckpt"]


def test_init_from_errors(cfg_factory, cifar_folder, tmp_path, net_a_run):
    missing = cfg_factory([*TINY_VGG, f"model.init_from={tmp_path / 'nope.ckpt'}"])
    with pytest.raises(FileNotFoundError, match="model.init_from=.*nope.ckpt does not exist"):
        build_module(missing)
    alexnet = cfg_factory(["model=alexnet_cifar", f"+model.init_from={net_a_run['best_ckpt']}"])
    with pytest.raises(ValueError, match="model.init_from works for the VGG networks"):
        build_module(alexnet)
    wider = cfg_factory(
        [
            *TINY_VGG,
            "model.width=0.5",
            "model.config=D",
            f"model.init_from={net_a_run['best_ckpt']}",
        ]
    )
    with pytest.raises(ValueError, match="init_from: .*shape"):
        build_module(wider)


# -- ImageNet layout: original images, scale jitter, dense test over mixed sizes -----------------
def test_vgg_on_original_imagenet_images(cfg_factory, imagenet_folder):
    cfg = cfg_factory(
        [
            "data=imagenet",
            "data.image_size=null",
            "data.num_classes=3",
            "data.batch_size=4",
            "model=vgg_cifar",
            "model.width=0.25",
            "aug=vgg",
            "aug.scale=[40,64]",
            "aug.crop=32",
            "debug=fdr",
            *FAST,
            f"paths.data_dir={imagenet_folder}",
        ]
    )
    results = train(cfg)
    assert results["steps"] == 1
    assert 0.0 <= results["metrics"]["test/top1_err"] <= 1.0
    assert results["config"]["aug"]["eval_scale"] is None  # Q = (40 + 64) / 2 = 52


# -- the LRN ablation ----------------------------------------------------------------------------
def test_vgg_lrn_experiment_config(cfg_factory):
    cfg = cfg_factory(["experiment=vgg_lrn"])
    assert cfg.model.name == "vgg_cifar" and cfg.model.config == "A" and cfg.model.lrn is None
    with_lrn = build_module(cfg_factory(["experiment=vgg_lrn", "model.lrn=true"]))
    assert "lrn1" in dict(with_lrn.net.features.named_children())
    without = build_module(cfg)
    assert "lrn1" not in dict(without.net.features.named_children())


# ~20 s on 2 busy cores: the sweep's process and one process per job (two)
@pytest.mark.slow
def test_vgg_lrn_multirun_sweeps_lrn(cifar_folder, tmp_path):
    # -m runs the experiment's own sweep; seeds cut to one here to keep it short.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet.train",
            "-m",
            "experiment=vgg_lrn",
            "debug=fdr",
            "hydra.sweeper.params.seed=0",
            *FAST,
            *cifar(cifar_folder),
            f"paths.log_dir={tmp_path}",
            "logger.wandb=null",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in tmp_path.rglob("results.json")]
    assert sorted(r["config"]["model"]["lrn"] for r in results) == [False, True]
    # the report judges the grid by VGG's claim (LRN does not help), not AlexNet's
    report = write_report(next(tmp_path.rglob("multirun.yaml")).parent, wandb=False)
    assert {(r.claim.name, r.paper) for r in report.claims} == {("vgg_lrn", 0.1)}
