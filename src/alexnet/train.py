"""Train a network: `python -m alexnet.train [experiment=...] [key=value ...]`.

The run itself is `alexnet.training.run.train`. This entry imports it, with torch and Lightning,
only once Hydra has composed a config and calls `main` with it: a config Hydra refuses gets its
one line in under half a second, and the launcher process of a multirun (`-m`), whose jobs run in
processes of their own, never imports them (~4 s of CPU each).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from alexnet import long_lived_imports
from alexnet.config import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> Any:
    """Returns the run's results, or with `optimized_metric` set its value (for sweepers)."""
    with long_lived_imports():
        import torch

        from alexnet.config.entry import USER_ERRORS, report_user_error
        from alexnet.training.multirun import objective, run_sweep_job, sweep_dir_of_job
        from alexnet.training.resume import Preempted
        from alexnet.training.run import train
    # Imported after Hydra set up logging, Lightning passes its lines on to Hydra's handlers
    # (the console and train.log); the console handler of its own would print each twice.
    logging.getLogger("lightning").handlers.clear()

    torch.set_float32_matmul_precision("high")
    metric, if_failed = cfg.get("optimized_metric"), cfg.get("objective_if_failed")
    if sweep_dir_of_job() is not None:
        # one job of a grid: skip it when done, record a failure
        return objective(run_sweep_job(cfg, train), metric, if_failed)
    try:
        return objective(train(cfg), metric)
    except Preempted as stop:
        print(f"preempted: {stop.message}", file=sys.stderr)
        raise
    except KeyboardInterrupt:
        out = cfg.paths.output_dir
        print(
            f"interrupted (Ctrl-C); to continue from its last checkpoint: "
            f"hydra.run.dir={out} ckpt_path=auto",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    except USER_ERRORS as err:
        report_user_error(err)


if __name__ == "__main__":
    main()
