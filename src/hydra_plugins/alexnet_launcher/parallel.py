"""Several grid jobs at once (``hydra.launcher.n_parallel``): where each job runs, and its output.

The launcher keeps ``n_parallel`` job slots busy. Each slot has its own device: slot i's jobs
see only ``hydra.launcher.devices[i]`` (as ``CUDA_VISIBLE_DEVICES``; default: the visible GPUs,
one per slot), so each job trains on "its" ``cuda:0`` and never learns of the others. Each
job's output reaches the sweep's stdout/stderr line by line, prefixed with its number
(``[#3] ...``), so the lines of jobs running side by side stay apart.
"""

import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import NamedTuple

STDERR_TAIL = 8192  # bytes of a job's stderr kept to explain a death without results.json
LINE_MAX = 65536  # bytes of an unfinished line (a progress bar redrawn in place) held back
THREADS_ENV = "OMP_NUM_THREADS"


class Slot(NamedTuple):
    """One of the launcher's ``n_parallel`` places to run a job."""

    env: dict[str, str]  # what this slot's jobs get in their environment, over the sweep's own
    where: str  # for the log: "GPU 1, 8 threads"


def visible_gpus(environ: Mapping[str, str], python: str = sys.executable) -> list[str]:
    """The GPUs a job started from this environment would see, as ``CUDA_VISIBLE_DEVICES``
    values: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set, else ``0 .. n-1`` for the
    ``n`` devices torch counts (asked in a child process, so that this one never touches CUDA
    or pays for importing torch)."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = []
        for entry in environ["CUDA_VISIBLE_DEVICES"].split(","):
            if not entry.strip() or entry.strip().startswith("-"):
                break  # CUDA ignores an invalid entry and every one after it ("-1": no GPU)
            ids.append(entry.strip())
        return ids
    try:
        count = subprocess.run(
            [python, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env=dict(environ),
        ).stdout.split()[-1]
        return [str(i) for i in range(int(count))]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return []


def job_slots(
    n_parallel: int,
    devices: Sequence[object] | None,
    environ: Mapping[str, str],
    cpus: int,
    gpus: Sequence[str] | None = None,
) -> list[Slot]:
    """The ``n_parallel`` job slots; ``gpus`` (found with `visible_gpus` when None) only matters
    when ``devices`` is not given. Raises ValueError, in one line, when there are too few
    devices for the slots."""
    if not isinstance(n_parallel, int) or n_parallel < 1:
        raise ValueError(f"hydra.launcher.n_parallel must be 1 or more, not {n_parallel!r}")
    if devices is not None:
        pinned: list[str] | None = [str(d) for d in devices]
        if n_parallel > len(pinned):
            raise ValueError(
                f"hydra.launcher.n_parallel={n_parallel} needs a device per job but "
                f"hydra.launcher.devices={pinned} lists {len(pinned)}: list more (the same one "
                "twice to share it) or run fewer at once"
            )
    elif n_parallel == 1:
        return [Slot({}, "")]  # one job at a time sees what the sweep sees, as it always has
    else:
        found = list(visible_gpus(environ)) if gpus is None else list(gpus)
        if found and n_parallel > len(found):
            raise ValueError(
                f"hydra.launcher.n_parallel={n_parallel} needs a device per job but "
                f"{len(found)} GPU(s) are visible: set hydra.launcher.devices (the same one "
                "twice to share it) or run fewer at once"
            )
        pinned = found or None  # no GPU: the jobs share the CPU
    # The jobs share the CPUs: each gets an equal share of threads through OMP_NUM_THREADS,
    # which sizes torch's intra-op pool when a job starts. alexnet.train leaves torch's default
    # (a thread per core), so without it N jobs would run N times as many compute threads as
    # there are cores, and OpenMP's spin-waiting threads then slow one another by more than
    # running side by side gains. Threads rather than CPU affinity: the kernel spreads equal jobs
    # over the cores well, and a job's DataLoader workers may still use cores another leaves
    # idle. GPU jobs get the same share (their data pipelines need the cores too); a user's own
    # OMP_NUM_THREADS wins, and one job at a time keeps every core, as before.
    threads = {}
    if n_parallel > 1 and THREADS_ENV not in environ:
        threads = {THREADS_ENV: str(max(1, cpus // n_parallel))}
    slots = []
    for i in range(n_parallel):
        env = dict(threads)
        where = []
        if pinned is not None:
            env["CUDA_VISIBLE_DEVICES"] = pinned[i]
            where.append(f"GPU {pinned[i]}")
        else:
            where.append("CPU")
        if threads:
            n = int(threads[THREADS_ENV])
            where.append(f"{n} thread{'s' if n > 1 else ''}")
        slots.append(Slot(env, ", ".join(where)))
    return slots


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask: a cpuset, a taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def last_redraw(line: bytes) -> bytes:
    """What a terminal would show of ``line``: the text after its last carriage return (a
    progress bar redraws itself in place)."""
    parts = [part for part in line.split(b"\r") if part.strip()]
    return parts[-1].rstrip() if parts else b""


_ECHO = threading.Lock()  # one job's line at a time on our stdout/stderr


class JobProcess:
    """One job's process, started at once, with threads copying its stdout and stderr into ours,
    a line at a time, each line prefixed with ``[#<job number>] ``. Once the process has exited
    and its output is drained, the object is put on ``done``.

    If our own stdout/stderr is gone (a closed terminal), the job's output is still drained,
    just no longer shown: a job must never die of a broken pipe.
    """

    def __init__(
        self, idx: int, slot: int, cmd: list[str], env: dict[str, str], done: queue.Queue
    ) -> None:
        self.idx = idx
        self.slot = slot
        self.returncode: int | None = None
        self.start = time.perf_counter()
        self._prefix = f"[#{idx}] ".encode()
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = threading.Thread(target=self._copy, args=("stdout",), daemon=True)
        out.start()
        threading.Thread(target=self._copy_then_reap, args=(out, done), daemon=True).start()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the job unless it has exited."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    @property
    def stderr_tail(self) -> str:
        return b"".join(self._tail)[-STDERR_TAIL:].decode(errors="replace")

    def _copy_then_reap(self, out: threading.Thread, done: queue.Queue) -> None:
        try:
            self._copy("stderr")
            out.join()
        finally:
            self.returncode = self.proc.wait()
            done.put(self)

    def _copy(self, name: str) -> None:
        pipe = getattr(self.proc, name)
        partial = b""
        echo = True
        with pipe:
            while chunk := pipe.read1(65536):
                if name == "stderr":
                    self._keep(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                if len(partial) > LINE_MAX:
                    partial = last_redraw(partial)[-LINE_MAX:]
                echo = echo and self._echo(name, lines)
        if partial and echo:
            self._echo(name, [partial])

    def _keep(self, chunk: bytes) -> None:
        self._tail.append(chunk)
        self._tail_size += len(chunk)
        while self._tail_size - len(self._tail[0]) > STDERR_TAIL:
            self._tail_size -= len(self._tail.popleft())

    def _echo(self, name: str, lines: list[bytes]) -> bool:
        """Write ``lines`` to our ``name`` stream; False once that stream is gone."""
        text = b"".join(
            self._prefix + shown + b"\n" for line in lines if (shown := last_redraw(line))
        )
        if not text:
            return True
        try:
            with _ECHO:
                stream = getattr(sys, name).buffer
                stream.write(text)
                stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or not a file any more
            return False
        return True


__all__ = [
    "JobProcess",
    "Slot",
    "job_slots",
    "last_redraw",
    "usable_cpus",
    "visible_gpus",
]
