"""A Hydra launcher that runs every job of a multirun in its own process, one after the other or
(``hydra.launcher.n_parallel``) several at once, each on its own device.

Hydra's basic launcher runs all jobs in the sweep's own process: a job that segfaults, is
killed by the out-of-memory killer or leaves the GPU in a bad state takes the whole grid with it,
and memory, compile caches and W&B state leak from one job into the next. Here each job is a
fresh ``python -m <entry module> <its overrides> hydra.run.dir=<its job dir>``, so:

- a job that raises or dies only fails its own cell (``results.json`` says how, in one line);
- jobs whose ``results.json`` says ``"status": "ok"`` are not started again, so re-running the
  same command into the same ``hydra.sweep.dir`` finishes an interrupted grid;
- Ctrl-C stops the job and the sweep.

With ``hydra.launcher.n_parallel=N`` up to N jobs run at once, in job order, each pinned to its
own GPU (``hydra.launcher.devices``) and given 1/N of the CPU's threads (``parallel.job_slots``);
the rules above hold for each job, and Ctrl-C or SIGTERM stops every running job.

Each job is a single process: never DDP inside a multirun (Lightning re-launches the script for
its extra ranks, which under ``-m`` would re-run the sweep). Selected in ``conf/train.yaml`` with
``override hydra/launcher: subprocess``; ``hydra/launcher=basic`` brings Hydra's back.
"""

import hashlib
import logging
import os
import queue
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from alexnet.training.multirun import (
    SWEEP_DIR_ENV,
    failure,
    is_done,
    objective,
    resume_point,
    set_aside_previous_attempt,
    set_aside_record,
)
from alexnet.training.record import Status, read_results, write_results
from hydra_plugins.alexnet_launcher.parallel import (
    STDERR_TAIL,
    JobProcess,
    Slot,
    job_slots,
    usable_cpus,
)

log = logging.getLogger(__name__)

# Hydra overrides of the sweep that must not reach a job: the job is a single run in its own dir.
NOT_FOR_JOBS = ("hydra.mode=", "hydra.run.dir=")
MAX_SUBDIR = 120  # characters; longer job dir names get shortened (file names stop at 255)


@dataclass
class SubprocessLauncherConf:
    _target_: str = "hydra_plugins.alexnet_launcher.subprocess_launcher.SubprocessLauncher"
    # The module each job runs as `python -m <module>`; null: the module the sweep was started as.
    # (No `from __future__ import annotations` in this file: Hydra's plugin scanner runs it
    # before it is in sys.modules, where dataclasses would look string annotations up.)
    module: Optional[str] = None  # noqa: UP045 (OmegaConf reads Optional, not `str | None`)
    # How many jobs run at once, each in its own process on its own device.
    n_parallel: int = 1
    # Each job slot's CUDA_VISIBLE_DEVICES (`[0,1]`; a device listed twice is shared by two
    # slots); null: the visible GPUs, one per slot, or none on a machine without.
    devices: Optional[list[str]] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/launcher", name="subprocess", node=SubprocessLauncherConf, provider="alexnet"
)


def entry_module() -> str:
    """The module this process was started as with ``python -m`` (``alexnet.train``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or not spec.name:
        raise RuntimeError(
            "the subprocess launcher needs the sweep started as `python -m <module> -m ...`; "
            "set hydra.launcher.module=<module> or use hydra/launcher=basic"
        )
    return spec.name.removesuffix(".__main__")


def quote_override_value(value: str) -> str:
    """``value`` quoted for a Hydra command-line override (job dirs contain ``=`` and ``,``)."""
    quote = "'" if "'" not in value else '"'
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def varying_keys(job_overrides: Sequence[Sequence[str]]) -> set[str]:
    """The override keys whose values differ between the jobs: the grid's factors and seed."""
    values: dict[str, set[str]] = {}
    for overrides in job_overrides:
        for override in overrides:
            values.setdefault(_key(override), set()).add(override)
    return {key for key, seen in values.items() if len(seen) > 1}


def shorten_subdir(subdir: str, overrides: Sequence[str], varying: set[str]) -> str:
    """``subdir`` itself when short enough; else the job's values of the keys that vary across the
    grid plus a hash of the full name, which keeps different settings in different dirs."""
    if len(subdir) <= MAX_SUBDIR:
        return subdir
    named = ",".join(sorted(o.lstrip("+~") for o in overrides if _key(o) in varying))
    digest = hashlib.sha1(subdir.encode()).hexdigest()[:8]
    return f"{named[:MAX_SUBDIR]}-{digest}" if named else digest


def describe_exit(returncode: int, stderr_tail: str) -> str:
    """One line saying why a job process ended without writing its results."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (often the out-of-memory killer)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    last = lines[-1] if lines else "no error output"
    return f"exited with code {returncode}: {last}"


def run_streaming(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``cmd`` with its output passed straight through; returns (exit code, end of stderr).

    stderr is copied chunk by chunk rather than line by line, so progress bars (which redraw
    with carriage returns) still show live.

    A SIGTERM to this process is passed on to the job, and the job's output is drained until it
    has saved and exited: were the launcher to die first, the job's next progress-bar write would
    raise BrokenPipeError and turn a clean preemption into a failure. `Preempted` then tells the
    caller. If our own stderr is gone (a closed terminal), the job's output is still drained,
    just no longer shown.
    """
    tail: deque[bytes] = deque()
    size = 0
    echo = True
    terminated = False
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) as proc:

        def forward(signum: int, frame: object) -> None:
            nonlocal terminated
            terminated = True
            if proc.poll() is None:
                proc.send_signal(signum)

        previous = signal.signal(signal.SIGTERM, forward)
        try:
            assert proc.stderr is not None
            while chunk := proc.stderr.read1(65536):
                if echo:
                    try:
                        sys.stderr.buffer.write(chunk)
                        sys.stderr.buffer.flush()
                    except OSError:
                        echo = False
                tail.append(chunk)
                size += len(chunk)
                while size - len(tail[0]) > STDERR_TAIL:
                    size -= len(tail.popleft())
            returncode = proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
    stderr_tail = b"".join(tail)[-STDERR_TAIL:].decode(errors="replace")
    if terminated:
        raise Preempted(returncode, stderr_tail)
    return returncode, stderr_tail


class Preempted(Exception):
    """The launcher got SIGTERM while a job ran; the job was passed the signal and has ended."""

    def __init__(self, returncode: int, stderr_tail: str) -> None:
        super().__init__(f"SIGTERM while a job ran (the job exited with {returncode})")
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def next_ended(done: queue.Queue) -> JobProcess:
    """The next job process to end. Waits a second at a time: were a signal delivered to
    another thread, its Python handler (SIGTERM's, Ctrl-C's) would still run within a second."""
    while True:
        try:
            return done.get(timeout=1.0)
        except queue.Empty:
            pass


class ParallelJob(NamedTuple):
    """A job of a parallel sweep, ready to start, then (``process``) running."""

    overrides: list[str]  # the job's own, as Hydra gave them
    run_overrides: list[str]  # what it runs with (ckpt_path added when it resumes)
    job_dir: Path
    cmd: list[str]
    env: dict[str, str]  # the sweep's; the slot adds its device and threads
    process: Optional[JobProcess] = None  # noqa: UP045


class SubprocessLauncher(Launcher):
    def __init__(
        self,
        module: str | None = None,
        n_parallel: int = 1,
        devices: Sequence[object] | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.n_parallel = n_parallel
        self.devices = devices
        self.slots: list[Slot] = []
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        # before the sweep writes anything: too few devices is the user's to fix, in one line
        try:
            self.slots = job_slots(self.n_parallel, self.devices, os.environ, usable_cpus())
        except ValueError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        module = self.module or entry_module()
        if len(self.slots) > 1:
            return self._launch_parallel(module, job_overrides, initial_job_idx, sweep_dir)
        [slot] = self.slots
        log.info(
            "Launching %d jobs, one process each (python -m %s)%s",
            len(job_overrides),
            module,
            f", on {slot.where}" if slot.where else "",
        )
        returns = []
        varying = varying_keys(job_overrides)
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            job_dir = self._job_dir(list(overrides), idx, varying)
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            returns.append(self._run(module, list(overrides), job_dir, sweep_dir, slot))
        return returns

    def _objective(self, results: dict | None):
        """What the sweeper reads of a job: its results, or with `optimized_metric` set that one
        number (`objective_if_failed` for a job that did not finish, when set)."""
        assert self.config is not None
        cfg = self.config
        return objective(results, cfg.get("optimized_metric"), cfg.get("objective_if_failed"))

    def _job_dir(self, overrides: list[str], idx: int, varying: set[str]) -> Path:
        """Where Hydra's basic launcher would put the job, ``hydra.sweep.dir/hydra.sweep.subdir``
        (this job's ``hydra.job.override_dirname`` by default), shortened when too long."""
        assert self.config is not None and self.hydra_context is not None
        job_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(job_config):
            job_config.hydra.job.id = idx
            job_config.hydra.job.num = idx
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(job_config)
        try:
            subdir = str(job_config.hydra.sweep.subdir)
            return Path(str(job_config.hydra.sweep.dir), shorten_subdir(subdir, overrides, varying))
        finally:
            HydraConfig.instance().cfg = saved

    def _prepare(self, overrides: list[str], job_dir: Path, lead: str) -> list[str] | None:
        """Ready ``job_dir`` for the job: None when it is done already (skip it), else the
        overrides to run it with (``ckpt_path`` added when it resumes)."""
        if is_done(job_dir):
            log.info("%sdone already (%s): skipped", lead, job_dir / "results.json")
            return None
        resume = resume_point(job_dir)
        if resume is not None:
            set_aside_record(job_dir)  # checkpoints, csv/ and the rest stay: the job goes on
            log.info("%sunfinished: resuming from %s", lead, resume)
            return [*overrides, f"ckpt_path={quote_override_value(str(resume))}"]
        set_aside_previous_attempt(job_dir)
        return overrides

    def _command(self, module: str, overrides: list[str], job_dir: Path) -> list[str]:
        assert self.config is not None
        hydra_overrides = [
            o for o in self.config.hydra.overrides.hydra if not o.startswith(NOT_FOR_JOBS)
        ]
        return [
            sys.executable,
            "-m",
            module,
            *overrides,
            *hydra_overrides,
            f"hydra.run.dir={quote_override_value(str(job_dir))}",
        ]

    def _record_death(
        self, job_dir: Path, overrides: list[str], returncode: int, stderr_tail: str, start: float
    ) -> dict:
        """The job's `results.json`; written first when the job died before it could say how
        it ended."""
        assert self.config is not None
        results = read_results(job_dir)
        if results is None:
            results = failure(
                Status.FAILED,
                describe_exit(returncode, stderr_tail),
                task_name=self.config.get("task_name"),
                overrides=overrides,
                wall_time_s=time.perf_counter() - start,
            )
            write_results(job_dir, results)
        return results

    def _return(self, overrides: list[str], results: dict | None) -> JobReturn:
        ret = JobReturn(overrides=overrides, working_dir=os.getcwd(), status=JobStatus.COMPLETED)
        ret.return_value = self._objective(results)
        return ret

    def _run(
        self, module: str, overrides: list[str], job_dir: Path, sweep_dir: Path, slot: Slot
    ) -> JobReturn:
        job_dir = job_dir.resolve()
        run_overrides = self._prepare(overrides, job_dir, "\t   ")
        if run_overrides is None:
            return self._return(overrides, read_results(job_dir))
        cmd = self._command(module, run_overrides, job_dir)
        env = {**os.environ, SWEEP_DIR_ENV: str(sweep_dir), **slot.env}
        start = time.perf_counter()
        try:
            returncode, stderr_tail = run_streaming(cmd, env)
        except Preempted as stop:
            # the job has saved and recorded `preempted` (or died unrecorded); like a scheduler
            # expects, the grid stops here and the same command resumes it
            returncode, stderr_tail = stop.returncode, stop.stderr_tail
        else:
            stop = None
        if returncode == -signal.SIGINT or returncode == 130:
            raise KeyboardInterrupt
        results = self._record_death(job_dir, run_overrides, returncode, stderr_tail, start)
        if stop is not None:
            log.warning("\t   SIGTERM: the grid stops here; the same command resumes it")
            raise SystemExit(128 + signal.SIGTERM)
        if results.get("status") != Status.OK:
            log.warning("\t   job failed: %s", results.get("error"))
        return self._return(overrides, results)

    def _launch_parallel(
        self,
        module: str,
        job_overrides: Sequence[Sequence[str]],
        initial_job_idx: int,
        sweep_dir: Path,
    ) -> list[JobReturn]:
        """Up to one job per slot at a time, started in job order; returns in job order.

        SIGTERM (a scheduler's notice) is passed on to every running job, which saves its
        `last.ckpt` and records `preempted`; no job starts after it, and once the running ones
        have ended the sweep exits 143. Ctrl-C stops the running jobs the same way and raises
        KeyboardInterrupt once they have ended. Either way the same command resumes the grid.
        """
        log.info(
            "Launching %d jobs, up to %d at a time, one process each (python -m %s): %s",
            len(job_overrides),
            len(self.slots),
            module,
            "; ".join(f"slot {i} on {slot.where}" for i, slot in enumerate(self.slots)),
        )
        varying = varying_keys(job_overrides)
        todo = deque(enumerate(job_overrides, start=initial_job_idx))
        free = deque(range(len(self.slots)))
        running: dict[int, ParallelJob] = {}
        done: queue.Queue[JobProcess] = queue.Queue()
        returns: dict[int, JobReturn] = {}
        stopped_by: list[int] = []  # the signal that stops the sweep, once one has

        def on_sigterm(signum: int, frame: object) -> None:
            stopped_by.append(signum)
            for job in list(running.values()):
                job.process.signal(signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            try:
                while running or (todo and not stopped_by):
                    while todo and free and not stopped_by:
                        idx, overrides = todo.popleft()
                        job_dir = self._job_dir(list(overrides), idx, varying).resolve()
                        job = self._ready(module, idx, list(overrides), job_dir, sweep_dir)
                        if isinstance(job, JobReturn):  # done already
                            returns[idx] = job
                            continue
                        if stopped_by:  # a SIGTERM while it was readied: the next run starts it
                            break
                        slot = free.popleft()
                        env = {**job.env, **self.slots[slot].env}
                        running[idx] = job._replace(
                            process=JobProcess(idx, slot, job.cmd, env, done)
                        )
                        log.info("\t#%d started on %s", idx, self.slots[slot].where)
                        if stopped_by:  # the SIGTERM came while it started
                            running[idx].process.signal(signal.SIGTERM)
                    if not running:
                        continue
                    process = next_ended(done)
                    free.append(process.slot)
                    finished = running.pop(process.idx)
                    returns[process.idx] = self._finish(finished, stopping=bool(stopped_by))
            except KeyboardInterrupt:
                self._stop_running(running, done)
                raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        if stopped_by:
            log.warning("\tSIGTERM: the grid stops here; the same command resumes it")
            raise SystemExit(128 + signal.SIGTERM)
        return [returns[i] for i in range(initial_job_idx, initial_job_idx + len(job_overrides))]

    def _ready(
        self, module: str, idx: int, overrides: list[str], job_dir: Path, sweep_dir: Path
    ) -> ParallelJob | JobReturn:
        """Ready job ``idx`` to start; what it returns when it is done already."""
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        run_overrides = self._prepare(overrides, job_dir, f"\t#{idx} ")
        if run_overrides is None:
            return self._return(overrides, read_results(job_dir))
        # Python jobs write their stdout unbuffered: it is a pipe here, and a job's lines should
        # reach the terminal when written, not a block at a time.
        env = {**os.environ, SWEEP_DIR_ENV: str(sweep_dir), "PYTHONUNBUFFERED": "1"}
        cmd = self._command(module, run_overrides, job_dir)
        return ParallelJob(overrides, run_overrides, job_dir, cmd, env)

    def _finish(self, job: ParallelJob, stopping: bool) -> JobReturn:
        """Record how a job's process ended (unless it was stopped with the sweep and left no
        record: then it resumes, as a job killed with its sweep does)."""
        process = job.process
        if not stopping and process.returncode in (-signal.SIGINT, 130):
            raise KeyboardInterrupt  # a job's own Ctrl-C stops the sweep, as with one at a time
        if stopping and read_results(job.job_dir) is None:
            log.warning("\t#%d stopped: the same command resumes it", process.idx)
            return self._return(job.overrides, None)
        results = self._record_death(
            job.job_dir,
            job.run_overrides,
            process.returncode,
            process.stderr_tail,
            process.start,
        )
        status, error = results.get("status"), results.get("error")
        wall = time.perf_counter() - process.start
        if status == Status.OK:
            log.info("\t#%d finished (%.0f s)", process.idx, wall)
        else:
            log.warning("\t#%d %s%s", process.idx, status, f": {error}" if error else "")
        return self._return(job.overrides, results)

    def _stop_running(self, running: dict[int, ParallelJob], done: queue.Queue) -> None:
        """Ctrl-C: SIGTERM to every running job, then wait for each to end; a second Ctrl-C
        kills them (a killed job still resumes from its last checkpoint)."""
        if not running:
            return
        log.warning(
            "\tCtrl-C: stopping %d running jobs; the same command resumes them", len(running)
        )
        for job in running.values():
            job.process.signal(signal.SIGTERM)
        try:
            while running:
                process = next_ended(done)
                self._finish(running.pop(process.idx), stopping=True)
        except KeyboardInterrupt:
            log.warning("\tCtrl-C again: killing the running jobs")
            for job in running.values():
                job.process.signal(signal.SIGKILL)
            while running:
                running.pop(next_ended(done).idx)
            raise
