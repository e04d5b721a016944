"""`hparams_search=lr_optuna`: Optuna searches a recipe's learning rate through the real command
(`python -m alexnet.train -m ...`, one process per trial) and records the best trial."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from alexnet.config.validate import validate_config
from conftest import compose_config

REPO = Path(__file__).resolve().parents[2]
METRIC = "val/best_top1_err"
HAS_OPTUNA = all(
    importlib.util.find_spec(name) is not None
    for name in ("optuna", "hydra_plugins.hydra_optuna_sweeper")
)
needs_optuna = pytest.mark.skipif(
    not HAS_OPTUNA,
    reason="optuna and hydra-optuna-sweeper are not installed (pip install -e '.[optuna]')",
)
# Two steps of a 1/8-width VGG-A per trial: the sweep, not the net, is under test.
TINY = [
    "data=synthetic",
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "data.num_workers=0",
    "model=vgg_cifar",
    "model.width=0.125",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "logger=none",
    "callbacks.progress_bar=false",
    "figures.enabled=false",
    "test=false",
]


@needs_optuna  # Hydra looks hydra/sweeper=optuna up even for a single run
def test_the_preset_composes(tmp_path):
    cfg = compose_config("train", [*TINY, "hparams_search=lr_optuna"], tmp_path)
    assert cfg.optimized_metric == METRIC and cfg.objective_if_failed == 1.0
    validate_config(cfg)  # the preflight knows every key the preset sets


@needs_optuna
@pytest.mark.slow
def test_an_optuna_lr_search_records_its_best_trial_and_resumes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    pythonpath = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
        "OMP_NUM_THREADS": "1",  # tiny nets on a busy machine: one thread each is faster
        "WANDB_MODE": "offline",
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    command = [
        *[sys.executable, "-m", "alexnet.train", "-m", "hparams_search=lr_optuna"],
        *["hydra.sweeper.n_trials=2", *TINY, f"hydra.sweep.dir={sweep_dir}"],
    ]

    def search() -> subprocess.CompletedProcess:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env
        )

    proc = search()
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = [json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")]
    assert len(trials) == 2 and all(t["status"] == "ok" for t in trials)
    lrs = [t["config"]["optim"]["lr"] for t in trials]
    assert len(set(lrs)) == 2 and all(1e-4 <= lr <= 1e-1 for lr in lrs)  # the preset's range

    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    values = {t["config"]["optim"]["lr"]: t["metrics"][METRIC] for t in trials}
    assert best.name == "optuna" and set(best.best_params) == {"optim.lr"}
    assert best.best_value == min(values.values())
    assert values[best.best_params["optim.lr"]] == best.best_value

    # The same command again: the seeded sampler proposes the same rates, and the launcher finds
    # each trial done and reads its result instead of training it again.
    again = search()
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("done already") == 2
    assert OmegaConf.load(sweep_dir / "optimization_results.yaml") == best
