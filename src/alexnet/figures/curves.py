"""Learning curves from a Lightning ``CSVLogger`` ``metrics.csv``, read without pandas.

Lightning writes one row per logging call with only that call's columns filled, so the file is
sparse: a training row has ``train/loss`` (and maybe ``train/lr``) with ``epoch`` and ``step``, a
validation row ``val/loss``, ``val/top1_err``, ``val/top5_err``. :func:`read_metrics_csv` turns it
into one series per metric; :func:`learning_curves` plots three panels side by side, 1200 x 400 px
(12 x 4 in at 100 dpi): error rates, loss, learning rate (log scale).

The x-axis is epochs completed, fractional for metrics logged every step: a point logged at
``step`` in epoch ``e`` sits at ``e + (step - end[e-1]) / (end[e] - end[e-1])``, where ``end[e]``
is the last step seen in epoch ``e`` (and ``end[-1] = -1``), so epoch-end metrics land on ``e + 1``.
Files without an ``epoch`` column are plotted against ``step``. A metric logged with both
``on_step`` and ``on_epoch`` (``train/loss_step``, ``train/loss_epoch``) is drawn both ways, the
per-step curve faint.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.figure import Figure

FIG_W, FIG_H = 1200, 400  # pixels
DPI = 100
EPOCH, STEP = "epoch", "step"

Series = list[tuple[float, float, float]]  # (epoch, step, value); nan where a cell was empty

# (title, [(metric, legend label, line style)], log y) per panel, left to right.
PANELS = (
    (
        "error rate",
        [
            ("train/top1_err", "train top-1", "-"),
            ("val/top1_err", "val top-1", "-"),
            ("val/top5_err", "val top-5", "--"),
        ],
        False,
    ),
    ("loss", [("train/loss", "train", "-"), ("val/loss", "val", "-")], False),
    ("learning rate", [("train/lr", "lr", "-")], True),
)


def read_metrics_csv(path: str | Path) -> dict[str, Series]:
    """Every metric column of ``metrics.csv`` as ``[(epoch, step, value), ...]`` in file order.

    Rows where the metric's cell is empty (or not a number) are left out of that metric; empty
    ``epoch``/``step`` cells become ``nan``. Columns with no values at all are dropped.
    """
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        names = [n for n in reader.fieldnames or [] if n not in (EPOCH, STEP)]
        out: dict[str, Series] = {n: [] for n in names}
        for row in reader:
            epoch, step = _number(row.get(EPOCH)), _number(row.get(STEP))
            for name in names:
                value = _number(row.get(name))
                if value is not None:
                    out[name].append((_nan(epoch), _nan(step), value))
    return {name: series for name, series in out.items() if series}


def learning_curves(metrics_csv: str | Path, path: str | Path) -> Path:
    """Plot error rates, loss and learning rate from ``metrics_csv`` into the PNG ``path``.

    Panels whose metrics were not logged say so; learning-rate columns written by Lightning's
    ``LearningRateMonitor`` (``lr-SGD`` ...) are used when there is no ``train/lr``. Raises
    ``ValueError`` naming the file when it holds none of the plotted metrics.
    """
    metrics = read_metrics_csv(metrics_csv)
    panels = [(title, _present(metrics, wanted), log) for title, wanted, log in PANELS]
    if not panels[2][1]:  # fall back to LearningRateMonitor's column names
        lr_cols = [(n, n, "-") for n in metrics if n.startswith("lr-") or n.startswith("lr/")]
        panels[2] = (panels[2][0], lr_cols, True)
    if not any(lines for _, lines, _ in panels):
        raise ValueError(
            f"{metrics_csv}: no usable rows for the learning curves "
            f"(metric columns with values: {sorted(metrics) or 'none'})"
        )
    to_x, x_label = _x_axis(metrics)
    fig = Figure(figsize=(FIG_W / DPI, FIG_H / DPI), dpi=DPI)
    fig.patch.set_facecolor("white")
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.9, wspace=0.28)
    for ax, (title, lines, log) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel(x_label)
        if not lines:
            ax.text(
                0.5,
                0.5,
                "not logged",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="grey",
            )
            continue
        for name, label, style in lines:
            faint = name.endswith("_step") and len(lines) > 1
            xs = [to_x(e, s) for e, s, _ in metrics[name]]
            ys = [v for _, _, v in metrics[name]]
            ax.plot(
                xs,
                ys,
                style,
                label=label,
                marker="." if len(xs) < 30 else None,
                alpha=0.35 if faint else 1.0,
                linewidth=0.8 if faint else 1.5,
            )
        if log and all(v > 0 for name, _, _ in lines for _, _, v in metrics[name]):
            ax.set_yscale("log")  # the paper's schedule divides the rate by 10
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _present(metrics: dict[str, Series], wanted) -> list[tuple[str, str, str]]:
    """The wanted metrics that were logged, each also as its ``_epoch``/``_step`` variants."""
    found = []
    for name, label, style in wanted:
        for suffix, tag in (("", ""), ("_epoch", " (epoch)"), ("_step", " (step)")):
            if name + suffix in metrics:
                found.append((name + suffix, label + tag, style))
    return found


def _x_axis(metrics: dict[str, Series]):
    """``(to_x(epoch, step) -> float, axis label)``: fractional epochs, or steps without epochs."""
    points = [(e, s) for series in metrics.values() for e, s, _ in series]
    if not points or any(math.isnan(e) for e, _ in points):
        return (lambda e, s: s), "step"
    end: dict[int, float] = {}
    for e, s in points:
        if not math.isnan(s):
            end[int(e)] = max(end.get(int(e), -math.inf), s)

    epochs = sorted(end)
    start = dict(zip(epochs, [-1.0] + [end[e] for e in epochs[:-1]], strict=True))

    def to_x(e: float, s: float) -> float:
        e = int(e)
        stop, begin = end.get(e), start.get(e, -1.0)
        if stop is None or math.isnan(s) or stop <= begin:
            return e + 1.0
        return e + min(max((s - begin) / (stop - begin), 0.0), 1.0)

    return to_x, "epoch"


def _number(cell: str | None) -> float | None:
    if cell is None or cell.strip() == "":
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _nan(x: float | None) -> float:
    return math.nan if x is None else x
