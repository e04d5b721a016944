"""Hydra's submitit launchers (the optional ``slurm`` extra) with a clean stop before a requeue.

Under submitit, SLURM sends USR2 (``SUBMITIT_PREEMPT_SIGNAL``) ``signal_delay_s`` before the time
limit; submitit's handler then requeues the job and exits at once, in the middle of a training
step, losing what the run did since its last ``last.ckpt``. These launchers turn that signal into
the SIGTERM training already handles: the run finishes its batch, writes ``last.ckpt`` and
``results.json`` (``"preempted"``) and exits 143. Only then does submitit's handler run: it counts
the timeout against ``max_num_timeout``, requeues the job once and exits. A pre-emption's SIGTERM
ends the same way. The requeued job runs the same job again, and ``ckpt_path=auto`` resumes it.

``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml) uses `SlurmLauncher`; `LocalLauncher`
runs the same on this machine (``hydra/launcher=submitit_local`` plus its ``_target_``).
"""

from __future__ import annotations

import signal
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
except ImportError:  # the extra is not installed: nothing to define
    submitit_launcher = None

# alexnet.training.resume.Preempted's exit status (not imported: Hydra imports every plugin
# module at start-up, and this one stays free of torch and Lightning).
PREEMPTED = 143


class CleanRequeue:
    """Runs a job with submitit's requeue signal deferred until training has stopped cleanly."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        requeue_signal = submitit.JobEnvironment._usr_sig()
        requeue = signal.getsignal(requeue_signal)  # submitit's: checkpoint, requeue, exit
        submitit_handler = getattr(requeue, "__self__", None)

        def stop_cleanly(signum: int, frame: Any) -> None:
            on_sigterm = signal.getsignal(signal.SIGTERM)
            if getattr(on_sigterm, "__self__", None) is submitit_handler:
                requeue(signum, frame)  # no training is listening (set-up, test): requeue now
            elif callable(on_sigterm):
                on_sigterm(signal.SIGTERM, frame)  # Lightning's: stop after this batch

        signal.signal(requeue_signal, stop_cleanly)
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as stop:
            if stop.code == PREEMPTED and callable(requeue):
                requeue(requeue_signal, None)  # exits, or raises when out of timeouts
            raise
        finally:
            signal.signal(requeue_signal, requeue)


if submitit_launcher is not None:

    class SlurmLauncher(CleanRequeue, submitit_launcher.SlurmLauncher):
        pass

    class LocalLauncher(CleanRequeue, submitit_launcher.LocalLauncher):
        pass
