"""Convergence speed (Figure 1): how soon a net first reaches 25% training error, and ReLU's
speed-up over tanh.

A job's *time to 25%* is the first epoch whose training error (``train/top1_err``, the error over
that epoch's batches, as cuda-convnet reported it) is at or below 0.25, counted in epochs
completed (epoch index + 1) and in images seen (``train/images_seen`` of that epoch). A job that
never got there is *censored*: all we know is that it needs more epochs than it ran.

The paper chose each activation's learning rate "to make training as fast as possible", so per
activation the fastest cell (all seeds reached 25%, smallest geometric mean of epochs) stands for
it; the other factors of the grid (the learning rate) are what is tuned. The speed-up is the
ratio of geometric means, tanh / ReLU, with a Welch interval on the log scale. Choosing the best
cell on the same runs that measure it flatters both sides alike; with few seeds read the interval
as optimistic. Verdict as for the other claims (``alexnet.report.claims``): reproduced when the
whole interval is above 1, and so on, with the paper's 6 in place of its error differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from alexnet.figures.curves import Series
from alexnet.report.claims import INCONCLUSIVE, REPRODUCED, Wording, verdict
from alexnet.report.stats import Estimate, contrast_ci, mean_ci
from alexnet.report.sweep import OK, Cell

THRESHOLD = 0.25
TRAIN_ERR, IMAGES = "train/top1_err", "train/images_seen"
PAPER_SPEEDUP = 6.0
ACTIVATION = "model.activation"


class SpeedWording(Wording):
    """verdict() reads log(relu / tanh) < 0 as "ReLU is faster"; say it in speed-ups."""

    def __init__(self) -> None:
        super().__init__(helps="ReLU is faster", hurts="tanh is faster", null="1x")

    def paper(self, value: float) -> str:
        return f"the paper's {math.exp(-value):.0f}x"


def first_reaching(
    curves: Mapping[str, Series], threshold: float = THRESHOLD, metric: str = TRAIN_ERR
) -> tuple[int, float | None] | None:
    """(epochs completed, images seen) when ``metric`` first is <= ``threshold``; None if never.

    ``curves`` is ``read_metrics_csv``'s output; images seen is None when not logged.
    """
    series = sorted((e, v) for e, _, v in curves.get(metric, []) if not math.isnan(e))
    images = {int(e): v for e, _, v in curves.get(IMAGES, []) if not math.isnan(e)}
    for epoch, value in series:
        if value <= threshold:
            return int(epoch) + 1, images.get(int(epoch))
    return None


@dataclass
class CellSpeed:
    """Time to 25% of each finished job of a cell (None: that job never got there)."""

    cell: Cell
    epochs: list[int | None]
    images: list[float | None]
    epochs_run: int  # the most epochs any of its jobs ran (the censoring point)

    @property
    def all_reached(self) -> bool:
        return bool(self.epochs) and all(e is not None for e in self.epochs)

    @property
    def images_known(self) -> bool:
        """Every finished job got there and logged ``train/images_seen`` at that epoch."""
        return self.all_reached and all(i is not None for i in self.images)

    def estimate(self, level: float = 0.95) -> Estimate | None:
        """Mean epochs to 25% with its interval; None unless every finished job got there."""
        return mean_ci([float(e) for e in self.epochs], level) if self.all_reached else None

    def images_estimate(self, level: float = 0.95) -> Estimate | None:
        """Mean images seen at 25% with its interval; None unless :attr:`images_known`."""
        return mean_ci([float(i) for i in self.images], level) if self.images_known else None

    @property
    def geo_mean(self) -> float:
        """Geometric mean of epochs to 25%; inf unless every finished job got there."""
        return _geo_mean(self.epochs) if self.all_reached else math.inf

    @property
    def geo_mean_images(self) -> float | None:
        """Geometric mean of images seen at 25%; None unless :attr:`images_known`."""
        return _geo_mean(self.images) if self.images_known else None


def _geo_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def cell_speed(cell: Cell) -> CellSpeed:
    epochs, images, run = [], [], 0
    for job in cell.ok:
        hit = first_reaching(job.curves())
        epochs.append(hit[0] if hit else None)
        images.append(hit[1] if hit else None)
        run = max(run, int((job.results or {}).get("epochs") or 0))
    return CellSpeed(cell, epochs, images, run)


@dataclass
class Speedup:
    """Figure 1's comparison: the fastest cell per activation and tanh / ReLU."""

    relu: CellSpeed | None
    tanh: CellSpeed | None
    ratio: Estimate | None  # tanh / relu epochs (geometric means), CI exponentiated
    lower_bound: float | None  # when tanh never reached 25%: ratio >= this
    verdict: str
    reason: str


def at_least(bound: float) -> str:
    """A censored speed-up as text: "> x" with x rounded down (3.75 is not "> 3.8")."""
    return f"> {math.floor(bound * 100 + 1e-9) / 100:.2f}x"


def _fastest(speeds: Sequence[CellSpeed]) -> CellSpeed | None:
    reached = [s for s in speeds if s.all_reached]
    return min(reached, key=lambda s: s.geo_mean) if reached else None


def speedup(cells: Sequence[Cell], level: float = 0.95) -> Speedup | None:
    """ReLU vs tanh on this grid; None when its cells do not have both activations, or while
    any job of the grid has not finished: each activation is represented by its fastest cell,
    and a cell not run yet may be that one."""
    if any(job.status != OK for cell in cells for job in cell.jobs):
        return None
    by_act: dict[str, list[CellSpeed]] = {"relu": [], "tanh": []}
    for cell in cells:
        act = cell.setting(ACTIVATION)
        if act in by_act and cell.ok:
            by_act[act].append(cell_speed(cell))
    if not by_act["relu"] or not by_act["tanh"]:
        return None
    relu, tanh = _fastest(by_act["relu"]), _fastest(by_act["tanh"])
    if relu is None:
        run = max(s.epochs_run for s in by_act["relu"])
        return Speedup(
            None,
            tanh,
            None,
            None,
            INCONCLUSIVE,
            f"ReLU never reached 25% training error in {run} epochs",
        )
    if tanh is None:
        run = max(s.epochs_run for s in by_act["tanh"])
        bound = run / relu.geo_mean
        verdict_ = REPRODUCED if bound > 1 else INCONCLUSIVE
        return Speedup(
            relu,
            None,
            None,
            bound,
            verdict_,
            f"tanh never reached 25% in {run} epochs",  # the bound: fmt_speedup
        )
    logs = contrast_ci(
        [(1.0, [math.log(e) for e in tanh.epochs]), (-1.0, [math.log(e) for e in relu.epochs])],
        level,
    )
    ratio = Estimate(
        math.exp(logs.mean),
        *(math.exp(x) if x is not None else None for x in (logs.low, logs.high)),
        logs.n,
        logs.df,
    )
    # The claim "ReLU is faster" is "log(relu / tanh) < 0": flip the signs for verdict().
    flipped = Estimate(
        -logs.mean,
        -logs.high if logs.has_ci else None,
        -logs.low if logs.has_ci else None,
        logs.n,
        logs.df,
    )
    verdict_, reason = verdict(flipped, -math.log(PAPER_SPEEDUP), SpeedWording())
    return Speedup(relu, tanh, ratio, None, verdict_, reason)


__all__ = [
    "CellSpeed",
    "Speedup",
    "THRESHOLD",
    "at_least",
    "cell_speed",
    "first_reaching",
    "speedup",
]
