"""The ablation report: what a grid of runs says about the paper's claims.

``python -m alexnet.report SWEEP_DIR`` (run by ``make ablate`` after its sweep) reads every job's
``results.json`` and ``csv/metrics.csv`` and writes into ``SWEEP_DIR``:

- ``report.md``: verdicts per claim, effects with their CIs beside the paper's numbers, the
  cells, and the jobs that did not finish;
- ``report.csv``: the same numbers, one row each (see ``alexnet.report.tables``);
- ``report.png``: the effects with their CIs and the learning curves per cell;

and sends the table and figure to W&B when the jobs logged there. The pieces:

- ``sweep``: the grid and its jobs, read from the sweep dir;
- ``stats``: means and differences with Student-t intervals (no scipy);
- ``claims``: the paper's claims, effects and the verdict rule; ``speed``: Figure 1's speed-up;
- ``analysis``: all numbers, computed once; ``tables``, ``figure``, ``wandb_log``: the outputs.

Exit status: 0 when every job of the grid finished, 1 when some did not (the report lists them;
re-running the sweep's command runs them), 2 when the dir holds no sweep.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from alexnet.report.analysis import Report, analyse
from alexnet.report.sweep import read_sweep

log = logging.getLogger(__name__)


def write_report(sweep_dir: str | Path, level: float = 0.95, wandb: bool = True) -> Report:
    """Analyse the sweep in ``sweep_dir`` and write ``report.{md,csv,png}`` there."""
    from alexnet.report.figure import report_figure
    from alexnet.report.tables import write_csv, write_markdown

    sweep = read_sweep(sweep_dir)
    report = analyse(sweep, level)
    png = report_figure(report, sweep.dir / "report.png")
    write_csv(report, sweep.dir / "report.csv")
    write_markdown(report, sweep.dir / "report.md", figure=png.name)
    if wandb:
        from alexnet.report.wandb_log import log_report

        log_report(report, png)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alexnet.report",
        description="Write report.md, report.csv and report.png for a multirun (ablation grid).",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun's hydra.sweep.dir")
    parser.add_argument(
        "--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)"
    )
    parser.add_argument(
        "--no-wandb", action="store_true", help="do not log the report to W&B even if the jobs did"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not 0.0 < args.level < 1.0:
        print(f"error: --level={args.level} must be between 0 and 1, e.g. 0.95", file=sys.stderr)
        return 2
    try:
        report = write_report(args.sweep_dir, args.level, wandb=not args.no_wandb)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = report.sweep.dir
    print(f"report: {out / 'report.md'} (+ report.csv, report.png)")
    for line in report.claim_lines():
        print("  " + line.replace("**", ""))
    if report.unfinished:
        print(
            f"{len(report.unfinished)} of {len(report.sweep.jobs)} jobs did not finish "
            "(see report.md); re-run the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


__all__ = ["main", "write_report"]
