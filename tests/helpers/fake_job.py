"""A stand-in for `python -m alexnet.train` as the subprocess launcher runs it, for launcher tests.

Run with a job's overrides and `hydra.run.dir='<dir>'`: writes `.hydra/overrides.yaml` and an
ok `results.json` there, like a finished job; a job with `model.init=kill` kills itself with
SIGKILL first (as the out-of-memory killer would), one with `model.init=crash` exits with code 3
after printing an error line. `env.json` records what the job was given (its sweep, device and
threads) and its pid; an ok job then takes `FAKE_JOB_SLEEP` seconds (or those of a `sleep=<s>`
override, which only launcher tests that bypass the config can pass), and `env.json` gets its
start and end times (time.time()), so tests can tell whether jobs overlapped.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

start = time.time()
args = sys.argv[1:]
run_dir = next(a for a in args if a.startswith("hydra.run.dir=")).split("=", 1)[1].strip("'\"")
overrides = [a for a in args if not a.startswith("hydra.")]
job = Path(run_dir)
(job / ".hydra").mkdir(parents=True, exist_ok=True)
(job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
seen = {
    "sweep": os.environ.get("ALEXNET_SWEEP_DIR"),
    "pid": os.getpid(),
    **{k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")},
    "start": start,
}
(job / "env.json").write_text(json.dumps(seen))
if "model.init=kill" in overrides:
    os.kill(os.getpid(), signal.SIGKILL)
if "model.init=crash" in overrides:
    print("RuntimeError: the GPU fell off the bus", file=sys.stderr)
    sys.exit(3)
sleep = next((a.split("=", 1)[1] for a in overrides if a.startswith("sleep=")), None)
time.sleep(float(sleep or os.environ.get("FAKE_JOB_SLEEP", "0")))
print(f"fake job {os.getpid()} done")  # on stdout, as a job's log lines are
(job / "env.json").write_text(json.dumps({**seen, "end": time.time()}))
results = {
    "status": "ok",
    "metrics": {"test/top1_err": 0.5, "test/top5_err": 0.1},
    "config": {"model": {"name": "four_layer"}, "task_name": "cifar_lrn"},
    "overrides": overrides,
}
(job / "results.json").write_text(json.dumps(results))
