"""A stand-in for `python -m alexnet.train` as the subprocess launcher runs it, for launcher tests.

Run with a job's overrides and `hydra.run.dir='<dir>'`: writes `.hydra/overrides.yaml` and an
ok `results.json` there, like a finished job; a job with `model.init=kill` kills itself with
SIGKILL first (as the out-of-memory killer would), one with `model.init=crash` exits with code 3
after printing an error line.
"""

import json
import os
import signal
import sys
from pathlib import Path

args = sys.argv[1:]
run_dir = next(a for a in args if a.startswith("hydra.run.dir=")).split("=", 1)[1].strip("'\"")
overrides = [a for a in args if not a.startswith("hydra.")]
job = Path(run_dir)
(job / ".hydra").mkdir(parents=True, exist_ok=True)
(job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
(job / "env.json").write_text(json.dumps({"sweep": os.environ.get("ALEXNET_SWEEP_DIR")}))
if "model.init=kill" in overrides:
    os.kill(os.getpid(), signal.SIGKILL)
if "model.init=crash" in overrides:
    print("RuntimeError: the GPU fell off the bus", file=sys.stderr)
    sys.exit(3)
results = {
    "status": "ok",
    "metrics": {"test/top1_err": 0.5, "test/top5_err": 0.1},
    "config": {"model": {"name": "four_layer"}, "task_name": "cifar_lrn"},
}
(job / "results.json").write_text(json.dumps(results))
