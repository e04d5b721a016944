"""The real command line on two CPU processes: `python -m alexnet.train trainer=ddp|towers`.

Lightning re-launches the script for the second rank under Hydra; a training must still make
one run directory, one results.json and (with W&B on) one W&B run, and its checkpoint must
load into the single-process grouped net.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet.eval import evaluate
from alexnet.training.module import Classifier

SRC = str(Path(__file__).resolve().parents[2] / "src")
TWO_CPU_PROCESSES = [
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "data=synthetic",
    "model=alexnet_cifar",
    "aug=none",
    "debug=limit",
    "data.batch_size=16",
    "callbacks.progress_bar=false",
]


def train_cli(overrides: list[str], log_dir: Path) -> Path:
    """Run a training; return its (only) run directory."""
    # this checkout's package, whatever is installed (the subprocess runs in another cwd)
    pythonpath = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "LOG_DIR": str(log_dir),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "alexnet.train", *overrides],
        env=env,
        cwd=log_dir.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (log_dir / "train").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, f"one training, one run dir; got {runs}"
    return runs[0]


def check_run_dir(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok" and results["steps"] == 8  # 2 epochs x 4 batches
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran in this dir too
    # one console log: rank 1 passes on only warnings (alexnet.parallel.launch.RankZeroLogs)
    assert "results written" in (run / "train.log").read_text()
    assert "[INFO]" not in (run / "train_ddp_process_1.log").read_text()
    assert sorted(p.name for p in run.glob("*.json")) == ["results.json"]
    assert len(list(run.rglob(".hydra"))) == 1
    return results


@pytest.mark.slow
def test_ddp_cli_one_run_dir_one_wandb_run_global_batch_split(tmp_path):
    run = train_cli(["trainer=ddp", *TWO_CPU_PROCESSES], tmp_path / "logs")
    results = check_run_dir(run)
    assert results["config"]["data"]["batch_size"] == 16  # the global batch, as configured
    assert "global batch 16 = 2 devices x 8" in (run / "train.log").read_text()
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    module = Classifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    assert module.net.conv2.groups == 2


@pytest.mark.slow
def test_towers_cli_checkpoint_scores_the_same_in_the_grouped_net(tmp_path, cfg_factory):
    run = train_cli(["trainer=towers", "logger=csv", *TWO_CPU_PROCESSES], tmp_path / "logs")
    results = check_run_dir(run)
    # the towers tested the best checkpoint; the grouped net scores it the same in one process
    # (the same test batches: debug=limit tests 2 batches of 16)
    eval_cfg = cfg_factory(
        [
            f"ckpt_path={results['best_ckpt']}",
            "data=synthetic",
            "aug=none",
            "debug=limit",
            "data.batch_size=16",
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
        ],
        name="eval",
        output_dir=tmp_path / "eval",
    )
    scored = evaluate(eval_cfg)["metrics"]
    assert scored["test/loss"] == pytest.approx(results["metrics"]["test/loss"], rel=1e-5)
    assert scored["test/top1_err"] == pytest.approx(results["metrics"]["test/top1_err"])
