"""Everything the report says, computed once from a sweep: cells, effects, claims, speed-up.

The tables (``tables.py``), the figure (``figure.py``) and the W&B upload (``wandb_log.py``) all
render this one :class:`Report`, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alexnet.report.claims import (
    METRICS,
    SCALE,
    Claim,
    Contrast,
    claim_contrasts,
    factor_contrasts,
    judge,
)
from alexnet.report.convergence import CellSpeed, Speedup, at_least, cell_speed, speedup
from alexnet.report.stats import Estimate, mean_ci
from alexnet.report.sweep import OK, Cell, Job, Sweep


@dataclass
class CellRow:
    cell: Cell
    errors: dict[str, Estimate]  # metric -> mean over the cell's finished seeds, in points
    speed: CellSpeed

    @property
    def n_ok(self) -> int:
        return len(self.cell.ok)


@dataclass
class EffectRow:
    contrast: Contrast
    metric: str
    estimate: Estimate
    pairs_used: int
    paper: float | None = None
    verdict: str | None = None
    reason: str | None = None

    @property
    def claim(self) -> Claim | None:
        return self.contrast.claim


@dataclass
class Report:
    sweep: Sweep
    level: float
    cells: list[CellRow]
    effects: list[EffectRow]
    speedup: Speedup | None
    unfinished: list[Job] = field(default_factory=list)

    @property
    def claims(self) -> list[EffectRow]:
        return [e for e in self.effects if e.claim is not None]

    def claim_lines(self) -> list[str]:
        """One line per claim: its verdict on top-1 error (top-5 beside), or the speed-up's."""
        lines = []
        for row in self.claims:
            if row.metric != METRICS[0]:
                continue
            top5 = next(
                (e for e in self.claims if e.contrast is row.contrast and e.metric == METRICS[1]),
                None,
            )
            extra = f"; top-5 {fmt_effect(top5.estimate)}" if top5 else ""
            lines.append(
                f"{row.claim.name}: **{row.verdict}**, {row.reason}: top-1 "
                f"{fmt_effect(row.estimate)} points vs paper {row.paper:+.1f}{extra} "
                f"({row.contrast.label}; paper: {row.claim.source})"
            )
        if self.speedup is not None:
            lines.append(
                f"relu_vs_tanh: **{self.speedup.verdict}**, {self.speedup.reason}: "
                f"{fmt_speedup(self.speedup)} (paper: 6x, CIFAR-10 four-layer CNN, "
                "Figure 1)"
            )
        return lines


def fmt_effect(est: Estimate, digits: int = 2) -> str:
    """``-1.23 [-2.00, -0.46]``, or ``-1.23 (no CI)``."""
    if est.mean != est.mean:  # nan
        return "n/a"
    if not est.has_ci:
        return f"{est.mean:+.{digits}f} (no CI)"
    return f"{est.mean:+.{digits}f} [{est.low:+.{digits}f}, {est.high:+.{digits}f}]"


def fmt_mean(est: Estimate | None, digits: int = 2) -> str:
    """``12.34 ± 0.56``, ``12.34`` for a single value, ``—`` for none."""
    if est is None or est.n == 0:
        return "—"
    if not est.has_ci:
        return f"{est.mean:.{digits}f}"
    return f"{est.mean:.{digits}f} ± {est.half_width:.{digits}f}"


def fmt_images(est: Estimate | None) -> str:
    """``240,000 ± 12,000``, ``240,000`` for a single value, ``—`` for none."""
    if est is None or est.n == 0:
        return "—"
    if not est.has_ci:
        return f"{est.mean:,.0f}"
    return f"{est.mean:,.0f} ± {est.half_width:,.0f}"


def _time_to_25(speed: CellSpeed) -> str:
    """``5.3 epochs, 240,000 images`` (geometric means over the cell's seeds)."""
    images = speed.geo_mean_images
    return f"{speed.geo_mean:.1f} epochs" + (f", {images:,.0f} images" if images else "")


def fmt_speedup(s: Speedup) -> str:
    if s.ratio is not None:
        ci = f" [{s.ratio.low:.1f}, {s.ratio.high:.1f}]" if s.ratio.has_ci else " (no CI)"
        return (
            f"tanh needs {s.ratio.mean:.1f}x{ci} the epochs of ReLU to reach 25% training "
            f"error (ReLU {s.relu.cell.label}: {_time_to_25(s.relu)}; tanh "
            f"{s.tanh.cell.label}: {_time_to_25(s.tanh)})"
        )
    if s.lower_bound is not None:
        relu = f"ReLU {s.relu.cell.label}: {_time_to_25(s.relu)}"
        return f"speed-up {at_least(s.lower_bound)} ({relu})"
    return "no speed-up measurable"


def _effect_rows(contrast: Contrast, level: float) -> list[EffectRow]:
    rows = []
    for metric in METRICS:
        claim = contrast.claim
        if claim is not None and metric not in claim.paper:
            continue
        est = contrast.estimate(metric, level)
        row = EffectRow(contrast, metric, est, len(contrast.usable(metric)))
        if claim is not None:
            row.paper = claim.paper[metric]
            row.verdict, row.reason = judge(claim, est, metric)
        rows.append(row)
    return rows


def analyse(sweep: Sweep, level: float = 0.95) -> Report:
    cells = sweep.cells()
    rows = [
        CellRow(
            cell,
            {m: mean_ci(cell.metric_values(m, SCALE), level) for m in METRICS},
            cell_speed(cell),
        )
        for cell in cells
    ]
    claims = claim_contrasts(cells, sweep.factors)
    others = factor_contrasts(cells, sweep.factors, sweep.levels, covered=claims)
    effects = [row for c in claims + others for row in _effect_rows(c, level)]
    unfinished = [j for j in sweep.jobs if j.status != OK]
    return Report(sweep, level, rows, effects, speedup(cells, level), unfinished)


__all__ = [
    "CellRow",
    "EffectRow",
    "Report",
    "analyse",
    "fmt_effect",
    "fmt_images",
    "fmt_mean",
    "fmt_speedup",
]
