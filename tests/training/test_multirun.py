"""Ablation grids: a job of a multirun, the one-process-per-job launcher, and `make ablate`'s
commands end to end (the real `python -m alexnet.train -m ...`, then `python -m alexnet.report`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback
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
from hydra_plugins.alexnet_launcher.parallel import job_slots, last_redraw, visible_gpus
from hydra_plugins.alexnet_launcher.subprocess_launcher import (
    MAX_SUBDIR,
    SubprocessLauncher,
    describe_exit,
    quote_override_value,
    shorten_subdir,
    varying_keys,
)
from tiny_run import TINY as TINY_RUN

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


# ---- several jobs at once (hydra.launcher.n_parallel) ------------------------------------------


def test_job_slots_pin_a_device_each_and_share_the_cpu():
    # one at a time, no devices given: the job's environment is the sweep's, as it always was
    assert job_slots(1, None, {}, cpus=16) == [({}, "")]
    # devices given (here on a machine without GPUs, as in the tests below): one per slot
    two = job_slots(2, ["0", "1"], {}, cpus=16)
    assert [s.env for s in two] == [
        {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "8"},
        {"CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "8"},
    ]
    assert [s.where for s in two] == ["GPU 0, 8 threads", "GPU 1, 8 threads"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in job_slots(2, [3, 3], {}, cpus=2)] == ["3", "3"]
    # no GPU: no pinning, a share of the cores each; the user's own OMP_NUM_THREADS wins
    assert (
        job_slots(3, None, {}, cpus=16, gpus=[])
        == [({"OMP_NUM_THREADS": "5"}, "CPU, 5 threads")] * 3
    )
    assert job_slots(4, None, {}, cpus=2, gpus=[])[0].env == {"OMP_NUM_THREADS": "1"}
    assert job_slots(2, None, {"OMP_NUM_THREADS": "1"}, cpus=16, gpus=[])[0] == ({}, "CPU")
    # GPUs found: the visible ones, one per slot
    found = job_slots(2, None, {}, cpus=16, gpus=["4", "5"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in found] == ["4", "5"]


@pytest.mark.parametrize(
    "n, devices, gpus, message",
    [
        (
            3,
            ["0", "1"],
            None,
            "hydra.launcher.n_parallel=3 needs a device per job but "
            "hydra.launcher.devices=['0', '1'] lists 2",
        ),
        (2, None, ["0"], "hydra.launcher.n_parallel=2 needs a device per job but 1 GPU(s)"),
        (0, None, [], "hydra.launcher.n_parallel must be 1 or more, not 0"),
    ],
)
def test_too_few_devices_for_the_slots_is_one_line(n, devices, gpus, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        job_slots(n, devices, {}, cpus=4, gpus=gpus)
    assert "\n" not in str(err.value)


def test_visible_gpus_follow_cuda_visible_devices():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8f3a,1,-1,2"}) == ["GPU-8f3a", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_last_redraw_keeps_what_a_terminal_shows():
    assert last_redraw(b"\rEpoch 0:  50%|#  \rEpoch 0: 100%|##| \r") == b"Epoch 0: 100%|##|"
    assert last_redraw(b"plain line") == b"plain line"
    assert last_redraw(b"\r \r") == b""


def launcher(tmp_path: Path, monkeypatch, **kwargs) -> SubprocessLauncher:
    """The subprocess launcher, set up as Hydra would, running `tests/helpers/fake_job.py` with
    job dirs `<tmp_path>/sweep/job<idx>` (no config composed: the overrides go to the fake job
    as they are)."""
    monkeypatch.setenv("PYTHONPATH", env(HELPERS)["PYTHONPATH"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("FAKE_JOB_SLEEP", raising=False)
    sweep_dir = tmp_path / "sweep"
    config = OmegaConf.create(
        {
            "task_name": "fake",
            "optimized_metric": None,
            "hydra": {
                "hydra_logging": None,
                "verbose": False,
                "sweep": {"dir": str(sweep_dir)},
                "overrides": {"hydra": []},
            },
        }
    )
    launcher = SubprocessLauncher(module="fake_job", **kwargs)
    launcher.setup(hydra_context=object(), task_function=None, config=config)
    monkeypatch.setattr(launcher, "_job_dir", lambda o, idx, v: sweep_dir / f"job{idx}")
    return launcher


def seen_by(tmp_path: Path, idx: int) -> dict:
    return json.loads((tmp_path / "sweep" / f"job{idx}" / "env.json").read_text())


PAIR = [["seed=0", "sleep=1.5"], ["seed=1", "sleep=0.3"]]


def test_parallel_jobs_run_at_once_each_on_its_own_device(tmp_path, monkeypatch, capfd):
    returns = launcher(tmp_path, monkeypatch, n_parallel=2, devices=["0", "1"]).launch(PAIR, 0)
    # in job order, though the second finished first
    assert [r.return_value["overrides"] for r in returns] == PAIR
    first, second = seen_by(tmp_path, 0), seen_by(tmp_path, 1)
    assert second["end"] < first["end"]
    assert max(first["start"], second["start"]) < min(first["end"], second["end"])  # overlap
    assert {first["CUDA_VISIBLE_DEVICES"], second["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
    assert first["pid"] != second["pid"]
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert first["OMP_NUM_THREADS"] == second["OMP_NUM_THREADS"] == threads
    out = capfd.readouterr().out
    assert f"[#0] fake job {first['pid']} done" in out  # each job's lines say whose they are
    assert f"[#1] fake job {second['pid']} done" in out


def test_parallel_rerun_skips_finished_jobs_and_retries_failed_ones(tmp_path, monkeypatch, caplog):
    jobs = [["seed=0", "sleep=0.5"], ["seed=1", "model.init=crash"], ["seed=2", "sleep=0.5"]]
    caplog.set_level(logging.INFO)
    returns = launcher(tmp_path, monkeypatch, n_parallel=2, devices=[0, 1]).launch(jobs, 0)
    assert [r.return_value["status"] for r in returns] == ["ok", "failed", "ok"]
    assert returns[1].return_value["error"] == (
        "exited with code 3: RuntimeError: the GPU fell off the bus"
    )
    assert "#1 failed: exited with code 3" in caplog.text
    assert re.search(r"#2 started on GPU [01]", caplog.text)  # in the slot #1 left
    pids = {idx: seen_by(tmp_path, idx)["pid"] for idx in (0, 2)}

    caplog.clear()
    again = launcher(tmp_path, monkeypatch, n_parallel=2, devices=[0, 1]).launch(jobs, 0)
    assert [r.return_value["status"] for r in again] == ["ok", "failed", "ok"]
    assert caplog.text.count("done already") == 2
    assert {idx: seen_by(tmp_path, idx)["pid"] for idx in (0, 2)} == pids  # not run again
    assert read_results(tmp_path / "sweep" / "job1" / ATTEMPTS / "1")["status"] == "failed"


@pytest.fixture
def default_ctrl_c():
    """Ctrl-C raises KeyboardInterrupt, as in a fresh process, whatever an earlier test in this
    process left behind."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stopped_parallel_sweep_stops_every_job_and_resumes_them(
    tmp_path, monkeypatch, signum, default_ctrl_c
):
    import signal
    import threading
    import time

    jobs = [["seed=0", "sleep=60"], ["seed=1", "sleep=60"], ["seed=2"]]
    sweep = launcher(tmp_path, monkeypatch, n_parallel=2, devices=[0, 1])

    def stop_once_both_run():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all((tmp_path / "sweep" / f"job{i}" / "env.json").is_file() for i in (0, 1)):
                break
            time.sleep(0.05)
        # Ctrl-C or a scheduler's notice, to the main thread, as a terminal's Ctrl-C reaches it
        signal.pthread_kill(threading.main_thread().ident, getattr(signal, signum))

    threading.Thread(target=stop_once_both_run, daemon=True).start()
    expected = SystemExit if signum == "SIGTERM" else KeyboardInterrupt
    with pytest.raises(expected) as stop:
        sweep.launch(jobs, 0)
    if signum == "SIGTERM":
        assert stop.value.code == 143
    for idx in (0, 1):
        pid = seen_by(tmp_path, idx)["pid"]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # ended and reaped: no job outlives its sweep
        # no record: the next run resumes it (from its last.ckpt, had it written one)
        assert read_results(tmp_path / "sweep" / f"job{idx}") is None
    assert not (tmp_path / "sweep" / "job2").exists()  # nothing started after the signal


def test_more_parallel_jobs_than_devices_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        launcher(tmp_path, monkeypatch, n_parallel=3, devices=["0", "1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: hydra.launcher.n_parallel=3 needs a device per job")
    assert err.count("\n") == 1


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


def sweep(
    sweep_dir: Path,
    *overrides: str,
    extra_path: Path | None = None,
    extra_env: dict[str, str] | None = None,
):
    return subprocess.run(
        [sys.executable, "-m", "alexnet.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env={**env(extra_path), **(extra_env or {})},
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
    # Lightning's lines go through the run's logging: into each job's train.log, printed once
    assert (out / name / "train.log").read_text().count("`Trainer.fit` stopped") == 1
    assert (proc.stdout + proc.stderr).count("`Trainer.fit` stopped") == 4

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
def test_parallel_grid_from_the_command_line(tmp_path):
    out = tmp_path / "sweep"
    grid = [
        "experiment=cifar_lrn",
        "model.lrn=true",
        "seed=0,1",
        "hydra.launcher.module=fake_job",
        "hydra.launcher.n_parallel=2",
        "hydra.launcher.devices=[0,1]",
    ]
    proc = sweep(out, *grid, extra_path=HELPERS, extra_env={"FAKE_JOB_SLEEP": "1.5"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads(p.read_text()) for p in sorted(out.glob("*/env.json"))]
    assert sorted(s["CUDA_VISIBLE_DEVICES"] for s in seen) == ["0", "1"]
    assert max(s["start"] for s in seen) < min(s["end"] for s in seen)
    assert all(r["status"] == "ok" for r in results_by_dir(out).values())
    logged = proc.stdout + proc.stderr
    assert "Launching 2 jobs, up to 2 at a time" in logged
    assert re.search(r"#0 started on GPU 0", logged) and re.search(r"#1 started on GPU 1", logged)


@pytest.mark.slow
def test_grid_killed_mid_cell_resumes_that_cell_and_ends_bit_identical(tmp_path):
    import signal
    import time

    import torch

    from alexnet.training.run import train
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


class CtrlCAtStep(Callback):
    """Ctrl-C as it reaches a training: a KeyboardInterrupt in the middle of fit."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_inside_fit_records_interrupted_and_gives_ctrl_c_back(
    tmp_path, monkeypatch, cfg_factory, default_ctrl_c
):
    # Lightning turns a Ctrl-C inside fit into exit(1) with Ctrl-C ignored; the job must still
    # record "interrupted" and stop the sweep, and the process get its Ctrl-C back.
    import signal

    import alexnet.training.run

    build = alexnet.training.run.build_callbacks
    monkeypatch.setattr(
        alexnet.training.run, "build_callbacks", lambda cfg: [*build(cfg), CtrlCAtStep(2)]
    )
    job_dir = tmp_path / "job"
    cfg = cfg_factory([*TINY_RUN, "data.num_workers=0"], output_dir=job_dir)
    with pytest.raises(KeyboardInterrupt):
        run_sweep_job(cfg, alexnet.training.run.train)
    assert read_results(job_dir)["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
