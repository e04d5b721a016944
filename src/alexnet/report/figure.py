"""``report.png``: the effects with their intervals, and learning curves per cell.

Three panels side by side, 1800 x 600 px (18 x 6 in at 100 dpi):

1. effects (A − B, points of test error) as dots with 95% CI bars, one row per effect and
   metric, the paper's number as a red cross where there is one; effects without an interval
   are hollow dots;
2. validation top-1 error per epoch, one colour per cell: each seed thin, the cell's mean bold;
3. training top-1 error per epoch, the same way, with the 25% line of Figure 1 when the grid
   compares ReLU and tanh.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure

from alexnet.report.analysis import Report
from alexnet.report.claims import SCALE

FIG_W, FIG_H, DPI = 1800, 600, 100
METRIC_SHORT = {"test/top1_err": "top-1", "test/top5_err": "top-5"}


def _effects_panel(ax, report: Report) -> None:
    rows = list(reversed(report.effects))  # first effect on top
    ax.set_title("effects: A − B (points of test error)")
    if not rows:
        ax.text(0.5, 0.5, "no effects", transform=ax.transAxes, ha="center", color="grey")
        return
    labels = []
    for y, row in enumerate(rows):
        est = row.estimate
        name = f"{row.claim.name}: " if row.claim else ""
        labels.append(f"{name}{row.contrast.label} ({METRIC_SHORT[row.metric]})")
        if math.isnan(est.mean):
            continue
        colour = "C0" if row.claim else "C7"
        if est.has_ci:
            ax.errorbar(
                est.mean,
                y,
                xerr=[[est.mean - est.low], [est.high - est.mean]],
                fmt="o",
                color=colour,
                capsize=3,
            )
        else:
            ax.plot(est.mean, y, "o", mfc="none", color=colour)
        if row.paper is not None:
            ax.plot(
                row.paper,
                y,
                "x",
                color="C3",
                markersize=8,
                label="paper" if "paper" not in ax.get_legend_handles_labels()[1] else None,
            )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_short(lbl, 48) for lbl in labels], fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8, loc="best")


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _curves_panel(ax, report: Report, metric: str, title: str, threshold: float | None) -> None:
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    drawn = False
    for i, row in enumerate(report.cells):
        colour = f"C{i % 10}"
        per_epoch: dict[int, list[float]] = defaultdict(list)
        for job in row.cell.ok:
            series = [(e, v) for e, _, v in job.curves().get(metric, []) if not math.isnan(e)]
            if not series:
                continue
            xs = [e + 1 for e, _ in series]
            ys = [v * SCALE for _, v in series]
            ax.plot(xs, ys, color=colour, alpha=0.3, linewidth=0.8)
            for x, y in zip(xs, ys, strict=True):
                per_epoch[int(x)].append(y)
        if per_epoch:
            epochs = sorted(per_epoch)
            ax.plot(
                epochs,
                [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs],
                color=colour,
                linewidth=2.0,
                marker="." if len(epochs) < 30 else None,
                label=_short(row.cell.label, 40),
            )
            drawn = True
    if threshold is not None:
        ax.axhline(threshold * SCALE, color="black", linestyle="--", linewidth=0.8)
    if not drawn:
        ax.text(
            0.5,
            0.5,
            "no curves (csv/metrics.csv)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="grey",
        )
        return
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def report_figure(report: Report, path: str | Path) -> Path:
    """Draw the report's figure into the PNG ``path``."""
    fig = Figure(figsize=(FIG_W / DPI, FIG_H / DPI), dpi=DPI)
    fig.patch.set_facecolor("white")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1]})
    fig.subplots_adjust(left=0.17, right=0.98, bottom=0.1, top=0.9, wspace=0.25)
    _effects_panel(axes[0], report)
    _curves_panel(axes[1], report, "val/top1_err", "validation top-1 error", None)
    threshold = 0.25 if report.speedup is not None else None
    _curves_panel(axes[2], report, "train/top1_err", "training top-1 error", threshold)
    fig.suptitle(
        f"{report.sweep.task_name or report.sweep.dir.name}: {report.sweep.dir}", fontsize=10
    )
    path = Path(path)
    fig.savefig(path, dpi=DPI)
    return path


__all__ = ["report_figure"]
