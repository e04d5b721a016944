"""`hydra/launcher=slurm` (the optional `slurm` extra): the preset composes with the real train
config, and grids run through the same plugin's local executor (`submitit_local`): finished jobs
are skipped by `ckpt_path=auto`, and the requeue signal stops a job cleanly before it is requeued
and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher",
    reason="hydra-submitit-launcher is not installed (pip install -e '.[slurm]')",
)

REPO = Path(__file__).resolve().parents[2]
CLEAN_LOCAL = "hydra_plugins.alexnet_launcher.submitit_requeue.LocalLauncher"
TINY = [
    "data=synthetic",
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "data.num_workers=0",
    "model=vgg_cifar",
    "model.width=0.125",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "logger=csv",
    "callbacks.progress_bar=false",
    "callbacks.checkpoint=null",
    "figures.enabled=false",
    "test=false",
    # Hydra names a submitit job's dir by all its overrides: too long a name for these
    "hydra.sweep.subdir=seed_${seed}",
]


def test_the_preset_composes_with_the_train_config():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.alexnet_launcher.submitit_requeue.SlurmLauncher"
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.cpus_per_task == 10 and launcher.timeout_min == 1440
    assert launcher.signal_delay_s == 300 and launcher.max_num_timeout == 20
    folder = OmegaConf.to_container(launcher)["submitit_folder"]
    assert folder == "${hydra.sweep.dir}/.submitit/%j"  # submitit_slurm's


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in [str(REPO / "src"), os.environ.get("PYTHONPATH")] if p
        ),
        "WANDB_MODE": "offline",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "OMP_NUM_THREADS": "1",
    }


def grid_command(sweep_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "alexnet.train",
        "-m",
        "hydra/launcher=submitit_local",
        "ckpt_path=auto",
        *TINY,
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]


def run_grid(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        grid_command(sweep_dir, *overrides),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env(),
    )


@pytest.mark.slow
def test_a_grid_through_submitit_finishes_and_a_rerun_trains_nothing(tmp_path):
    out = tmp_path / "sweep"
    first = run_grid(out, "seed=0,1")
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = [out / "seed_0", out / "seed_1"]
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        assert results["status"] == "ok" and results["epochs"] == 2, job
    stamps = [(job / "results.json").stat().st_mtime_ns for job in jobs]

    again = run_grid(out, "seed=0,1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [(job / "results.json").stat().st_mtime_ns for job in jobs] == stamps
    for job in jobs:
        assert "finished already; nothing to do" in (job / "train.log").read_text()


def job_processes(sweep_dir: Path) -> list[int]:
    """The submitit job processes (not their controller) of this sweep."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "submitit.core._submit" in cmdline and str(sweep_dir) in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc")
def test_the_requeue_signal_stops_cleanly_requeues_once_and_resumes(tmp_path):
    import submitit

    out = tmp_path / "sweep"
    command = grid_command(
        out,
        f"hydra.launcher._target_={CLEAN_LOCAL}",
        "trainer.max_epochs=40",
        "seed=0",
    )
    proc = subprocess.Popen(
        command, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    job, deadline = out / "seed_0", time.monotonic() + 200
    while not (job / "checkpoints" / "last.ckpt").is_file():  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    [pid] = job_processes(out)
    os.kill(pid, submitit.JobEnvironment._usr_sig())  # what SLURM sends before the time limit
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]

    stopped = json.loads((job / "attempts" / "1" / "results.json").read_text())
    assert stopped["status"] == "preempted" and stopped["resume_ckpt"].endswith("last.ckpt")
    results = json.loads((job / "results.json").read_text())
    assert results["status"] == "ok" and results["epochs"] == 40
    assert results["resumed_from"] == stopped["resume_ckpt"]
    assert not (job / "attempts" / "2").exists()
    # submitit's own lines (Hydra's job log repeats them with its own prefix)
    logs = [line for p in out.glob(".submitit/*/*_log.*") for line in p.read_text().splitlines()]
    submitit_lines = "\n".join(line for line in logs if line.startswith("submitit "))
    assert submitit_lines.count("Requeued job") == 1, submitit_lines
    usr_sig = signal.Signals(submitit.JobEnvironment._usr_sig()).name
    assert f"Caught signal {usr_sig}" in submitit_lines
