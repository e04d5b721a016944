"""The package installs as a plain wheel (no editable install, no checkout around it): the
configs travel inside it and every entry point has a console script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = dict(
    re.findall(
        r'^(alexnet-[\w-]+) = "([\w.:]+)"$',
        (REPO / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0],
        re.M,
    )
)


def test_every_entry_point_has_a_console_script():
    entries = {"train", "eval", "prepare", "prepare_store", "check_data"}
    entries |= {"figures.__main__", "bench.__main__", "bench.towers", "report"}
    assert {target.split(":")[0] for target in SCRIPTS.values()} == {
        f"alexnet.{e}" for e in entries
    }


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_trains_without_the_checkout(tmp_path):
    # Build the wheel, install it alone into a new venv whose only other path is this venv's
    # site-packages (for torch and friends: a `.pth` path line, so the editable install's own
    # `.pth` hook there is not run), and train from a directory outside the checkout.
    # No PYTHONPATH: a checkout's src/ (and the egg-info a build leaves there) must not be seen.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATA_DIR", "LOG_DIR")}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1")
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(wheels), str(REPO)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("alexnet_lab-*.whl"))
    assert "alexnet/conf/train.yaml" in zipfile.ZipFile(wheel).namelist()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    subprocess.run([*pip, "install", "-q", "--no-deps", str(wheel)], check=True, env=env)
    # After the install: pip would take this venv's editable alexnet-lab for the wheel's.
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run(
        [str(venv / "bin" / "alexnet-train"), "data=synthetic", "debug=fdr"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import alexnet; print(alexnet.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(site) in where, f"imported {where.strip()}, not the wheel"
    assert list((work / "logs").rglob("train.log")), "the run wrote no log under ./logs"
