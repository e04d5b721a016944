"""Ablation grids: a job of a multirun, the one-process-per-job launcher, and `make ablate`'s
commands end to end (the real `python -m alexnet.train -m ...`, then `python -m alexnet.report`).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from alexnet.report import main as report_main
from alexnet.training.multirun import (
    ATTEMPTS,
    is_done,
    read_results,
    resume_point,
    run_sweep_job,
    set_aside_previous_attempt,
)
from hydra_plugins.alexnet_launcher.subprocess_launcher import (
    MAX_SUBDIR,
    describe_exit,
    quote_override_value,
    shorten_subdir,
    varying_keys,
)

REPO = Path(__file__).resolve().parents[2]
HELPERS = REPO / "tests" / "helpers"


def job_cfg(job_dir: Path):
    return OmegaConf.create(
        {
            "task_name": "lrn_pool",
            "paths": {"output_dir": str(job_dir)},
            "logger": {"csv": True, "wandb": None},
        }
    )


# ---- one job of a sweep -----------------------------------------------------------------------


def test_failing_job_records_one_line_and_does_not_raise(tmp_path):
    def task(cfg):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    out = run_sweep_job(job_cfg(tmp_path), task)
    saved = read_results(tmp_path)
    assert out == saved
    assert saved["status"] == "failed" and not is_done(tmp_path)
    assert saved["error"] == "RuntimeError: CUDA out of memory."
    assert saved["config"]["task_name"] == "lrn_pool" and saved["wall_time_s"] >= 0


def test_interrupted_job_is_recorded_and_stops_the_sweep(tmp_path):
    def task(cfg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep_job(job_cfg(tmp_path), task)
    assert read_results(tmp_path)["status"] == "interrupted"


def test_retry_moves_the_last_attempt_aside(tmp_path):
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / "csv").mkdir()
    (job / "csv" / "metrics.csv").write_text("epoch,step\n0,1\n")
    (job / "train.log").write_text("first attempt\n")
    (job / "results.json").write_text(json.dumps({"status": "failed"}))
    assert set_aside_previous_attempt(job) == job / ATTEMPTS / "1"  # the launcher calls it
    first = job / ATTEMPTS / "1"
    assert (first / "csv" / "metrics.csv").is_file() and (first / "results.json").is_file()
    assert (job / ".hydra").is_dir() and (job / "train.log").is_file()  # Hydra's stay put
    assert not (job / "csv").exists()
    (job / "results.json").write_text("{}")
    assert set_aside_previous_attempt(job) == job / ATTEMPTS / "2"
    assert set_aside_previous_attempt(job) is None  # nothing left to move


def test_extra_ranks_of_a_job_leave_the_bookkeeping_to_the_first(tmp_path, monkeypatch):
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed"}))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_sweep_job(job_cfg(tmp_path), lambda cfg: "ran") == "ran"
    assert not (tmp_path / ATTEMPTS).exists()


# ---- the launcher's helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, resumes",
    [
        (None, True),  # killed before it could write results.json
        ({"status": "preempted"}, True),
        ({"status": "interrupted"}, True),
        ({"status": "failed", "error": "killed by SIGKILL (often the out-of-memory killer)"}, True),
        ({"status": "failed", "error": "BrokenPipeError: [Errno 32] Broken pipe"}, True),
        ({"status": "failed", "error": "ValueError: bad config"}, False),
        ({"status": "failed", "error": "non-finite loss at step 7"}, False),
    ],
)
def test_a_job_stopped_from_outside_resumes_one_that_failed_by_itself_starts_afresh(
    tmp_path, record, resumes
):
    assert resume_point(tmp_path) is None  # nothing to resume from yet
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    if record is not None:
        (tmp_path / "results.json").write_text(json.dumps(record))
    assert resume_point(tmp_path) == (last if resumes else None)


# A job that takes SIGTERM as training does: it finishes what it is doing (here: writes to its
# stderr, as a progress bar would) and exits 143. Killing only the launcher must not break it.
SIGTERM_JOB = """
import signal, sys, time
def stop(signum, frame):
    time.sleep(0.5)  # saving a checkpoint
    sys.stderr.write("saved\\n" * 2000)
    sys.stderr.flush()
    open(sys.argv[1], "w").write("clean")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
sys.stderr.write("started\\n"); sys.stderr.flush()
time.sleep(60)
"""
LAUNCHER = """
import os, sys
from hydra_plugins.alexnet_launcher.subprocess_launcher import Preempted, run_streaming
try:
    run_streaming([sys.executable, "-c", sys.argv[1], sys.argv[2]], dict(os.environ))
except Preempted as stop:
    print("preempted", stop.returncode)
"""


def test_sigterm_to_the_launcher_is_passed_on_and_the_job_ends_cleanly(tmp_path):
    import signal

    marker = tmp_path / "job_ended"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, SIGTERM_JOB, str(marker)],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert launcher.stderr.readline() == "started\n"  # the job runs, its handler is set
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, err[-2000:]
    assert out.strip() == "preempted 143"
    assert marker.read_text() == "clean"
    assert err.count("saved") == 2000  # all of the job's output after the signal came through


def test_describe_exit():
    assert describe_exit(-9, "") == "killed by SIGKILL (often the out-of-memory killer)"
    assert describe_exit(-15, "") == "killed by SIGTERM"
    assert describe_exit(1, "Traceback\n  ...\nValueError: bad\n\n") == (
        "exited with code 1: ValueError: bad"
    )
    assert describe_exit(2, "") == "exited with code 2: no error output"


def test_job_dir_names():
    assert quote_override_value("/a/model.lrn=True,seed=0") == "'/a/model.lrn=True,seed=0'"
    assert quote_override_value("it's") == '"it\'s"'
    jobs = [
        ["model.lrn=True", "seed=0", "trainer.max_epochs=2"],
        ["model.lrn=False", "seed=0", "trainer.max_epochs=2"],
    ]
    assert varying_keys(jobs) == {"model.lrn"}
    assert shorten_subdir("model.lrn=True", jobs[0], {"model.lrn"}) == "model.lrn=True"
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    short_a = shorten_subdir(long_a, jobs[0], {"model.lrn"})
    assert short_a.startswith("model.lrn=True-") and len(short_a) <= MAX_SUBDIR + 9
    # the rest of the overrides still tells settings apart
    assert short_a != shorten_subdir(long_b, jobs[0], {"model.lrn"})


# ---- the real commands ------------------------------------------------------------------------

TINY = [
    "data=synthetic",
    "data.train_size=32",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "logger.wandb=null",
    "callbacks.progress_bar=false",
    "callbacks.checkpoint=null",
    # No figure pass at each job's end (~3 s a job): nothing here looks at it, and a figure that
    # fails never fails a run (tests/training/test_dashboard.py).
    "figures.enabled=false",
]


def env(extra_path: Path | None = None) -> dict[str, str]:
    paths = [
        str(REPO / "src"),
        *([str(extra_path)] if extra_path else []),
        os.environ.get("PYTHONPATH", ""),
    ]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "WANDB_MODE": "offline",
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }


def sweep(sweep_dir: Path, *overrides: str, extra_path: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "alexnet.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env=env(extra_path),
    )


def report(sweep_dir: Path, capsys) -> tuple[int, str, str]:
    """`python -m alexnet.report SWEEP_DIR`, in this process (one interpreter start less)."""
    capsys.readouterr()
    code = report_main([str(sweep_dir), "--no-wandb"])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(sweep_dir: Path, section: str) -> list[dict]:
    with (sweep_dir / "report.csv").open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["section"] == section]


def results_by_dir(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}


@pytest.mark.slow
def test_tiny_lrn_pool_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / "sweep"
    # AlexNet-CIFAR at a quarter of its conv width: the grid, not the net, is under test
    grid = ["experiment=lrn_pool", "seed=0", "model.conv_width=0.25", *TINY]
    proc = sweep(out, *grid)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = results_by_dir(out)
    # one dir per cell, named by the overrides that vary (the rest hashed in: names stay short)
    assert sorted(name.rsplit("-", 1)[0] for name in jobs) == [
        "model.lrn=False,model.pool=nonoverlap",
        "model.lrn=False,model.pool=overlap",
        "model.lrn=True,model.pool=nonoverlap",
        "model.lrn=True,model.pool=overlap",
    ]
    for name, results in jobs.items():
        assert results["status"] == "ok" and results["steps"] == 4  # 2 epochs of 32 / 16
        assert (out / name / "csv" / "metrics.csv").is_file()
        assert f"model.pool={results['config']['model']['pool']}" in name
    header = next((out / name / "csv" / "metrics.csv").open()).strip().split(",")
    assert "train/images_seen" in header

    code, stdout, stderr = report(out, capsys)
    assert code == 0, stderr
    assert "lrn: inconclusive at this n" in stdout  # one seed: no interval
    cells = rows(out, "cell")
    assert sorted({r["name"] for r in cells}) == [
        "model.lrn=False,model.pool=nonoverlap",
        "model.lrn=False,model.pool=overlap",
        "model.lrn=True,model.pool=nonoverlap",
        "model.lrn=True,model.pool=overlap",
    ]
    assert all(r["n"] == "1" for r in cells if r["metric"] == "test/top1_err")
    claims = {(r["detail"].split(":")[0], r["metric"]) for r in rows(out, "claim")}
    assert claims == {
        ("lrn", "test/top1_err"),
        ("lrn", "test/top5_err"),
        ("pool", "test/top1_err"),
        ("pool", "test/top5_err"),
    }
    assert (out / "report.png").stat().st_size > 10_000
    assert "| True | overlap | 1/1 |" in (out / "report.md").read_text()

    # the same command again: every job is done, none runs, the report is rewritten
    stamps = {n: (out / n / "results.json").stat().st_mtime_ns for n in jobs}
    again = sweep(out, *grid)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("done already") == 4
    assert {n: (out / n / "results.json").stat().st_mtime_ns for n in jobs} == stamps


@pytest.mark.slow
def test_failing_job_does_not_stop_the_grid(tmp_path, capsys):
    out = tmp_path / "sweep"
    grid = ["experiment=cifar_lrn", "model.lrn=true", "model.init=bogus,paper", "seed=0", *TINY]
    proc = sweep(out, *grid)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_status = {r["status"]: r for r in results_by_dir(out).values()}
    assert set(by_status) == {"ok", "failed"}  # the job after the failed one ran
    assert by_status["failed"]["error"].startswith("ConfigError: model.init='bogus' is unknown")
    assert by_status["ok"]["config"]["model"]["name"] == "four_layer"
    [bogus] = [p.parent for p in out.glob("*/results.json") if "bogus" in p.parent.name]
    assert "Traceback" in (bogus / "train.log").read_text()  # the details stay in the job log

    code, _, stderr = report(out, capsys)
    assert code == 1 and "1 of 2 jobs did not finish" in stderr
    [failed] = rows(out, "job")
    assert failed["name"] == "model.init=bogus,seed=0" and failed["verdict"] == "failed"
    assert "init='bogus' is unknown" in failed["detail"]
    assert "## Jobs that did not finish" in (out / "report.md").read_text()


@pytest.mark.slow
def test_killed_or_crashed_job_process_fails_only_its_cell_and_is_retried(tmp_path, capsys):
    out = tmp_path / "sweep"
    grid = [
        "experiment=cifar_lrn",
        "model.lrn=true",
        "model.init=paper,kill,crash",
        "seed=0",
        "hydra.launcher.module=fake_job",
    ]
    proc = sweep(out, *grid, extra_path=HELPERS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = {
        p.parent.name: read_results(p.parent)["error"]
        for p in out.glob("*/results.json")
        if read_results(p.parent)["status"] != "ok"
    }
    assert errors == {
        "model.init=kill,model.lrn=True,seed=0": "killed by SIGKILL (often the out-of-memory "
        "killer)",
        "model.init=crash,model.lrn=True,seed=0": "exited with code 3: RuntimeError: the GPU "
        "fell off the bus",
    }
    # each job was told which sweep it belongs to
    ok = out / "model.init=paper,model.lrn=True,seed=0"
    assert json.loads((ok / "env.json").read_text())["sweep"] == str(out.resolve())
    code, _, _ = report(out, capsys)
    assert code == 1
    assert {r["name"]: r["verdict"] for r in rows(out, "job")} == {
        "model.init=kill,seed=0": "failed",
        "model.init=crash,seed=0": "failed",
    }

    # the same command again: the finished job is skipped, the failed ones run again, their
    # first attempt kept under attempts/1
    again = sweep(out, *grid, extra_path=HELPERS)
    assert again.returncode == 0
    assert (again.stdout + again.stderr).count("done already") == 1
    killed = out / "model.init=kill,model.lrn=True,seed=0"
    assert read_results(killed / ATTEMPTS / "1")["error"].startswith("killed by SIGKILL")
    assert read_results(killed)["status"] == "failed"
    assert not (ok / ATTEMPTS).exists()


@pytest.mark.slow
def test_grid_killed_mid_cell_resumes_that_cell_and_ends_bit_identical(tmp_path):
    import signal
    import time

    import torch

    from alexnet.train import train
    from conftest import compose_config
    from tiny_run import PER_EPOCH, TINY

    grid = [
        "experiment=cifar_lrn",
        *TINY,
        "model.lrn=true",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        "callbacks.last.every_n_steps=4",
    ]
    one_thread = {"OMP_NUM_THREADS": "1"}  # bit-identical floats across processes

    def run_grid(sweep_dir: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "alexnet.train", "-m", *grid, f"hydra.sweep.dir={sweep_dir}"],
            cwd=REPO,
            env={**env(), **one_thread},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    # the grid killed (SIGKILL to the sweep and its job) in the middle of an epoch
    proc = run_grid(tmp_path / "cut")
    deadline = time.monotonic() + 400
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "no mid-epoch checkpoint"
        try:
            [last] = (tmp_path / "cut").glob("*/checkpoints/last.ckpt")
            step = torch.load(last, weights_only=True, mmap=True)["global_step"]
        except (ValueError, FileNotFoundError, RuntimeError, EOFError):
            step = 0
        if step > PER_EPOCH and step % PER_EPOCH:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    cell = last.parents[1].name
    assert read_results(tmp_path / "cut" / cell) is None

    again = run_grid(tmp_path / "cut")
    output = again.stdout.read()
    assert again.wait(600) == 0, output[-3000:]
    assert "unfinished: resuming from" in output
    [done] = [p.parent.name for p in (tmp_path / "cut").glob("*/results.json")]
    assert done == cell

    # The reference: the cell's training uninterrupted, in this process with one thread as the
    # job had (an interpreter start less than running the grid a third time).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(compose_config("train", grid, tmp_path / "ref" / cell))
    finally:
        torch.set_num_threads(threads)
    got, want = (read_results(tmp_path / d / cell) for d in ("cut", "ref"))
    assert got["status"] == "ok" and got["resumed_from"] == str(last.resolve())
    timing = {"train/img_per_s": got["metrics"]["train/img_per_s"]}
    assert got["metrics"] == {**want["metrics"], **timing}
    a, b = (
        torch.load(tmp_path / d / cell / "checkpoints" / "last.ckpt", weights_only=True)
        for d in ("ref", "cut")
    )
    assert a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key

    def rows_without_timing(d: str) -> list[dict]:
        with (tmp_path / d / cell / "csv" / "metrics.csv").open(newline="") as f:
            return [
                {k: v for k, v in r.items() if k != "train/img_per_s"} for r in csv.DictReader(f)
            ]

    assert rows_without_timing("cut") == rows_without_timing("ref")
