"""``report.md`` (for people) and ``report.csv`` (for programs) from a :class:`Report`.

``report.csv`` is one long table, a row per number, with the columns of :data:`CSV_COLUMNS`:

- ``section=cell``: a cell's mean over seeds of ``test/top1_err``, ``test/top5_err`` (points),
  ``epochs_to_25pct_train_err`` and ``images_to_25pct_train_err`` (``train/images_seen`` then;
  empty when a job never got there or did not log it); ``detail`` says how many of its jobs
  finished;
- ``section=claim``: an effect that tests a paper claim, with ``paper`` and ``verdict``
  (``relu_vs_tanh``: the tanh / ReLU ratio of epochs to 25% training error);
- ``section=effect``: any other factor's effect;
- ``section=job``: a job of the grid that did not finish (``verdict`` is its status,
  ``detail`` its one-line error); ``section=stale``: job dirs not in this grid, ignored.
"""

from __future__ import annotations

import csv
from pathlib import Path

from alexnet.report.analysis import Report, fmt_effect, fmt_images, fmt_mean, fmt_speedup
from alexnet.report.claims import METRICS
from alexnet.report.stats import Estimate
from alexnet.report.sweep import FAILED, INCOMPLETE, INTERRUPTED, NOT_STARTED, OK

CSV_COLUMNS = (
    "section",
    "name",
    "metric",
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "paper",
    "verdict",
    "detail",
)
SPEED_METRIC = "epochs_to_25pct_train_err"
IMAGES_METRIC = "images_to_25pct_train_err"
METRIC_TITLES = {"test/top1_err": "test top-1 err", "test/top5_err": "test top-5 err"}


def _num(x: float | None) -> str:
    return "" if x is None or x != x else f"{x:.6g}"


def _est_cells(est: Estimate | None) -> list[str]:
    if est is None:
        return ["0", "", "", ""]
    return [str(est.n), _num(est.mean), _num(est.low), _num(est.high)]


def csv_rows(report: Report) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in report.cells:
        done = f"{row.n_ok}/{len(row.cell.jobs)} finished"
        for metric in METRICS:
            rows.append(
                ["cell", row.cell.label, metric, *_est_cells(row.errors[metric]), "", "", done]
            )
        reached = row.speed.estimate(report.level)
        if row.speed.epochs:
            never = sum(e is None for e in row.speed.epochs)
            detail = done + (f"; {never} never reached 25%" if never else "")
            rows.append(
                ["cell", row.cell.label, SPEED_METRIC, *_est_cells(reached), "", "", detail]
            )
            rows.append(
                [
                    "cell",
                    row.cell.label,
                    IMAGES_METRIC,
                    *_est_cells(row.speed.images_estimate(report.level)),
                    "",
                    "",
                    detail,
                ]
            )
    for row in report.effects:
        section = "claim" if row.claim else "effect"
        detail = f"{row.claim.name}: {row.claim.source}" if row.claim else ""
        rows.append(
            [
                section,
                row.contrast.label,
                row.metric,
                *_est_cells(row.estimate),
                _num(row.paper),
                row.verdict or "",
                detail,
            ]
        )
    s = report.speedup
    if s is not None:
        ratio = s.ratio
        rows.append(
            [
                "claim",
                "relu_vs_tanh",
                "tanh/relu epochs to 25% train err",
                *(_est_cells(ratio) if ratio else ["", _num(s.lower_bound), "", ""]),
                "6",
                s.verdict,
                s.reason,
            ]
        )
    for job in report.unfinished:
        rows.append(
            ["job", job_label(report, job), "", "", "", "", "", "", job.status, job.error or ""]
        )
    for job in report.sweep.stale:
        rows.append(["stale", job.name, "", "", "", "", "", "", job.status, str(job.dir)])
    return rows


def job_label(report: Report, job) -> str:
    """The job by the values that set it apart (its cell and seed), not its long dir name."""
    keys = [*report.sweep.factors, "seed"]
    values = job.values
    return ",".join(f"{k}={values[k]}" for k in keys if k in values) or job.name


def write_csv(report: Report, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_rows(report))
    return path


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def clean(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return lines


def _summary(report: Report) -> str:
    sweep = report.sweep
    counts = [
        f"{sweep.count(s)} {s}"
        for s in (OK, FAILED, INTERRUPTED, INCOMPLETE, NOT_STARTED)
        if sweep.count(s)
    ]
    seeds = sorted({j.values.get("seed", "") for j in sweep.jobs} - {""})
    grid = " x ".join(f"{f} ({', '.join(sweep.levels[f])})" for f in sweep.factors) or "one cell"
    return (
        f"{len(sweep.jobs)} jobs: {grid}"
        + (f" x seeds ({', '.join(seeds)})" if seeds else "")
        + f". Jobs: {', '.join(counts) or 'none'}."
    )


def markdown(report: Report, figure: str | None = "report.png") -> str:
    sweep = report.sweep
    pct = f"{report.level:.0%}"
    out = [
        f"# Ablation report: {sweep.task_name or sweep.dir.name}",
        "",
        f"Sweep `{sweep.dir}`. {_summary(report)}",
        "",
        f"Errors are test-set error rates in percentage points, the paper's unit. `±` and "
        f"`[low, high]` are {pct} confidence intervals over seeds (Student t; Welch for "
        "differences); an effect is A − B averaged over the cells of the other factors, so "
        "negative means A lowers the error. No CI: a cell has fewer than 2 finished seeds.",
        "",
    ]
    lines = report.claim_lines()
    out += ["## Verdicts", ""]
    out += [f"- {line}" for line in lines] or ["No claim of the paper can be tested on this grid."]
    out += ["", "## Effects", ""]
    effect_rows = [
        [
            row.claim.name if row.claim else "",
            row.contrast.label,
            METRIC_TITLES[row.metric],
            str(row.estimate.n),
            fmt_effect(row.estimate),
            "" if row.paper is None else f"{row.paper:+.1f}",
            row.claim.source if row.claim else "",
            f"{row.verdict} ({row.reason})" if row.verdict else "",
        ]
        for row in report.effects
    ]
    if effect_rows:
        out += _table(
            [
                "claim",
                "effect (A − B)",
                "metric",
                "n",
                f"points [{pct} CI]",
                "paper",
                "paper's setting",
                "verdict",
            ],
            effect_rows,
        )
    else:
        out.append("No factor with two or more levels.")
    out += ["", "## Cells", ""]
    factors = sweep.factors or ["cell"]
    cell_rows = []
    for row in report.cells:
        values = [row.cell.values.get(f, row.cell.label) for f in factors]
        speed = row.speed
        if not speed.epochs:
            epochs = "—"
        elif speed.all_reached:
            epochs = fmt_mean(speed.estimate(report.level), 1)
        else:
            epochs = f"> {speed.epochs_run} ({sum(e is None for e in speed.epochs)} never)"
        cell_rows.append(
            [
                *values,
                f"{row.n_ok}/{len(row.cell.jobs)}",
                *(fmt_mean(row.errors[m]) for m in METRICS),
                epochs,
                fmt_images(speed.images_estimate(report.level)),
            ]
        )
    out += _table(
        [
            *factors,
            "finished",
            *(METRIC_TITLES[m] for m in METRICS),
            "epochs to 25% train err",
            "images seen then",
        ],
        cell_rows,
    )
    if report.speedup is not None:
        out += [
            "",
            "## ReLU vs tanh (Figure 1)",
            "",
            fmt_speedup(report.speedup) + ".",
            "Each activation is represented by its fastest cell (the learning rate tuned per "
            "activation, as in the paper); its epochs and images seen are geometric means "
            "over seeds (the cells table gives arithmetic means).",
        ]
    if report.unfinished:
        out += ["", "## Jobs that did not finish", ""]
        out += _table(
            ["job", "status", "error", "dir"],
            [
                [job_label(report, j), j.status, j.error or "", f"`{j.dir.name}`" if j.dir else "—"]
                for j in report.unfinished
            ],
        )
        out += ["", "Re-run the same command to run them again: finished jobs are skipped."]
    if sweep.stale:
        out += ["", "## Ignored job dirs (not in this grid)", ""]
        out += [f"- `{j.name}` ({j.status})" for j in sweep.stale]
    if figure:
        out += ["", f"![effects and learning curves]({figure})"]
    return "\n".join(out) + "\n"


def write_markdown(report: Report, path: Path, figure: str | None = "report.png") -> Path:
    path.write_text(markdown(report, figure))
    return path


__all__ = ["CSV_COLUMNS", "csv_rows", "markdown", "write_csv", "write_markdown"]
