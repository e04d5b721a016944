"""End to end: the real configs through `train` and `evaluate`, on tiny data on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet.eval import evaluate
from alexnet.training.module import Classifier
from alexnet.training.run import train
from conftest import compose_config

FAST = [
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=false",
    "compile=false",  # compiling on CPU takes minutes (experiment=cifar10_fast turns it on)
    "figures.enabled=false",  # no test here looks at them (tests/training/test_dashboard.py does)
]
# Full-size VGG (138M parameters): ~30 s for one step on 2 CPU cores.
SLOW_EXPERIMENTS = {"vgg_imagenet", "vgg_lrn_imagenet"}
_EXPERIMENT_FILES = (Path(__file__).parents[1] / "conf/experiment").glob("*.yaml")
EXPERIMENTS = [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_EXPERIMENTS else name
    for name in sorted(p.stem for p in _EXPERIMENT_FILES)
]


def data_overrides(experiment: str, cifar: Path, imagenet: Path) -> list[str]:
    if "imagenet" in experiment:
        return [f"paths.data_dir={imagenet}", "data.batch_size=2", "data.num_classes=3"]
    return [f"paths.data_dir={cifar}", "data.batch_size=8", "data.val_size=40"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(experiment, cfg_factory, cifar_folder, imagenet_folder):
    cfg = cfg_factory(
        [
            f"experiment={experiment}",
            "debug=fdr",
            *FAST,
            *data_overrides(experiment, cifar_folder, imagenet_folder),
        ]
    )
    results = train(cfg)
    assert results["status"] == "ok"
    assert results["steps"] == 1
    assert 0.0 <= results["metrics"]["test/top1_err"] <= 1.0


def limit_run(cifar_folder, out: Path, extra=()):
    cfg = compose_config(
        "train",
        [
            "experiment=cifar10_alexnet",
            "debug=limit",
            *FAST,
            f"paths.data_dir={cifar_folder}",
            "data.batch_size=16",
            "data.val_size=40",
            *extra,
        ],
        out,
    )
    return train(cfg)


# One short training (with W&B offline, testing the whole test split) that the tests below read,
# instead of one each: ~20 s on 2 busy cores per training.
@pytest.fixture(scope="module")
def short_run(cifar_folder, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("short_run")
    return out, limit_run(cifar_folder, out, extra=["trainer.limit_test_batches=1.0"])


def test_short_training_on_cifar_folder_writes_run_dir(short_run, cifar_folder):
    out, results = short_run
    assert results["epochs"] == 2 and results["steps"] == 8
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"]["test/top1_err"] == pytest.approx(results["metrics"]["test/top1_err"])
    assert saved["config"]["model"]["name"] == "alexnet_cifar"
    assert saved["train_img_per_s"] > 0
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert Path(saved["best_ckpt"]).is_file()
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "train/top1_err", "val/top1_err", "val/top5_err", "train/lr"):
        assert key in header
    # the statistics were computed once and cached beside the data
    assert (cifar_folder / "cifar10" / "stats.npz").is_file()


def test_checkpoint_rebuilds_network_and_eval_matches_training_test(
    short_run, cfg_factory, cifar_folder, tmp_path
):
    _, results = short_run  # tested on the whole test split (trainer.limit_test_batches=1.0)
    # load_from_checkpoint needs nothing but the file: the hparams hold plain values
    module = Classifier.load_from_checkpoint(results["best_ckpt"], map_location="cpu")
    assert module.hparams.model["name"] == "alexnet_cifar"
    eval_cfg = cfg_factory(
        [
            f"ckpt_path={results['best_ckpt']}",
            *FAST[:2],
            f"paths.data_dir={cifar_folder}",
            "data.val_size=40",
        ],
        name="eval",
        output_dir=tmp_path / "eval",
    )
    scored = evaluate(eval_cfg)
    assert scored["metrics"]["test/top1_err"] == pytest.approx(
        results["metrics"]["test/top1_err"], abs=1e-6
    )
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["metrics"] == scored["metrics"]


def test_resume_from_last_checkpoint_continues_epochs(short_run, cifar_folder, tmp_path):
    first_dir, first = short_run
    last = first_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True, map_location="cpu")["epoch"] == 1
    resumed = limit_run(
        cifar_folder,
        tmp_path / "b",
        extra=[f"ckpt_path={last}", "trainer.max_epochs=3", "logger.wandb=null"],
    )
    assert first["steps"] == 8
    assert resumed["epochs"] == 3 and resumed["steps"] == 12


def test_imagenet_folder_with_odd_images_trains(cfg_factory, imagenet_folder, tmp_path):
    cfg = cfg_factory(
        [
            "data=imagenet",
            "model=alexnet",
            "aug=paper",
            "aug.eval=ten_crop",
            "data.num_classes=3",
            "data.batch_size=2",
            "debug=limit",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "logger.wandb=null",
            *FAST,
            f"paths.data_dir={imagenet_folder}",
        ]
    )
    results = train(cfg)
    assert results["steps"] == 2
    assert 0.0 <= results["metrics"]["test/top1_err"] <= 1.0


def test_wandb_offline_run_has_metric_keys(short_run):
    out, _ = short_run
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"train/loss", b"val/top1_err", b"test/top1_err", b"lrn"):
        assert key in data


def test_missing_data_root_is_one_clear_line(tmp_path):
    empty = tmp_path / "nothing-here"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet.train",
            f"paths.data_dir={empty}",
            "data.download=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: data.root={empty} does not exist")
    assert str(empty / "cifar10") in lines[-1] and "DATA_DIR" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_run_estimate_says_how_long_the_rest_takes(caplog):
    import logging

    from alexnet.training.callbacks import RunEstimate, format_duration

    class Trainer:
        estimated_stepping_batches, global_step, is_global_zero = 1020, 20, True
        strategy = type("S", (), {"root_device": torch.device("cpu")})()

    est = RunEstimate(warmup=2, measure=3)
    batch = (None, torch.zeros(8))
    with caplog.at_level(logging.INFO, logger="alexnet.training.callbacks"):
        for _ in range(5):
            est.on_train_batch_end(Trainer(), None, None, batch, 0)
    assert est.estimate_s is not None and est.estimate_s >= 0
    assert "the remaining 1000 training steps take about" in caplog.text
    assert "trainer.max_epochs=1" in caplog.text
    assert [format_duration(s) for s in (40, 840, 7500)] == ["40 s", "14 min", "2 h 05 min"]
