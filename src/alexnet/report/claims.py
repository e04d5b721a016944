"""The papers' claims, the effects that test them, and a verdict per claim.

An *effect* (:class:`Contrast`) compares cells "with" (A) and "without" (B) something. Each A
cell is paired with the B cell that has the same values of every other factor, and the effect is
the mean over those pairs of ``mean(A) - mean(B)``: in a LRN x pooling grid, "LRN on - off" is
averaged over both pooling settings, so the pooling's own effect does not blur it. Its 95%
interval is Welch's (``alexnet.report.stats.contrast_ci``); seeds are the samples.

A claim says which config values make A and B (``model.lrn: true`` vs ``false``), what the paper
measured (in percentage points of error, A - B) and which paper it is: a claim is tested only on
cells whose ``model.name`` belongs to that paper's family (:func:`family_of`): the VGG nets
(``vgg``, ``vgg_cifar``) get VGG's claims (Simonyan & Zisserman 2014), every other model
AlexNet's (Krizhevsky et al. 2012). :data:`CLAIMS` is the one list of them (the experiment
configs do not repeat them). Every factor of the grid also gets a plain effect, each level
against the first, unless a claim covers it already.

Verdict rule, for a claim that A *lowers* error (AlexNet's numbers are all negative):

- whole CI below 0: **reproduced** (with how its size compares with the paper's);
- whole CI above 0: **not reproduced** (the opposite effect);
- CI holds 0 but not the paper's value: **not reproduced** (any effect is smaller than the
  paper's);
- CI holds 0 and the paper's value, or no CI (fewer than 2 finished seeds in a cell):
  **inconclusive at this n**.

For a claim that A makes *no difference* (VGG: LRN does not improve net A, +0.1 / +0.1 points),
the same rule with "no effect" meaning within :data:`NO_EFFECT_BAND` (0.5 points) of 0
(:func:`no_effect_verdict`, an equivalence test):

- whole CI inside [-0.5, +0.5]: **reproduced** (and whether the paper's value is inside it);
- whole CI below -0.5 or above +0.5: **not reproduced** (A lowers / raises the error by more);
- CI reaching past the band on one side or both, or no CI: **inconclusive at this n**.

A CI that holds the paper's +0.1 is not enough: a wide one holds it and AlexNet's -1.4 alike.

The papers measured LRN, pooling and towers on ImageNet with their full nets: on CIFAR-10 their
sizes are a reference, not a prediction. AlexNet's CIFAR-10 LRN claim (13% -> 11%) is for the
four-layer net.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alexnet.report.stats import Estimate, contrast_ci
from alexnet.report.sweep import Cell

METRICS = ("test/top1_err", "test/top5_err")
SCALE = 100.0  # error fractions -> percentage points, the paper's unit
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive at this n"
# A "no difference" claim holds when the whole CI lies within this many points of 0: about a
# third of AlexNet's LRN gain (1.4 / 1.2), and more than the 0.1 VGG measured.
NO_EFFECT_BAND = 0.5
# model.name -> the paper whose claims its grids test; any other model is AlexNet's.
FAMILIES = {"vgg": "vgg", "vgg_cifar": "vgg"}


def family_of(model: Any) -> str:
    """``"vgg"`` for the VGG nets, ``"alexnet"`` for every other ``model.name`` (or none)."""
    return FAMILIES.get(str(model), "alexnet")


@dataclass(frozen=True)
class Claim:
    name: str
    text: str  # what the paper says, in a line
    a: Mapping[str, Any]  # config values of the "with" side
    b: Mapping[str, Any]  # ... and of the baseline
    paper: Mapping[str, float]  # metric -> the paper's A - B, in points
    source: str  # where the paper's numbers come from
    family: str = "alexnet"  # whose paper: tested on models of that family_of() only
    models: tuple[str, ...] | None = None  # the model.name values the claim is about; None: any
    not_models: tuple[str, ...] = ()
    no_effect_within: float | None = None  # set: the claim is "no difference" (see the docstring)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "lrn",
        "response normalisation lowers error (section 3.3)",
        {"model.lrn": True},
        {"model.lrn": False},
        {"test/top1_err": -1.4, "test/top5_err": -1.2},
        "ImageNet, the paper's net",
        not_models=("four_layer",),
    ),
    Claim(
        "cifar_lrn",
        "four-layer CNN on CIFAR-10: 13% test error without normalisation, 11% with",
        {"model.lrn": True},
        {"model.lrn": False},
        {"test/top1_err": -2.0},
        "CIFAR-10, four-layer CNN (section 3.3)",
        models=("four_layer",),
    ),
    Claim(
        "pool",
        "overlapping pooling (3/2) lowers error vs 2/2 (section 3.4)",
        {"model.pool": "overlap"},
        {"model.pool": "nonoverlap"},
        {"test/top1_err": -0.4, "test/top5_err": -0.3},
        "ImageNet, the paper's net",
    ),
    Claim(
        "towers",
        "two towers beat one tower with half the kernels (section 3.2)",
        {"model.towers": 2, "model.conv_width": 1.0},
        {"model.towers": 1, "model.conv_width": 0.5},
        {"test/top1_err": -1.7, "test/top5_err": -1.2},
        "ImageNet, the paper's net",
    ),
    Claim(
        "vgg_lrn",
        "LRN does not improve net A: A-LRN 29.7 / 10.5 vs A 29.6 / 10.4 top-1 / top-5 "
        "error (VGG, section 4.1)",
        {"model.lrn": True},
        {"model.lrn": False},
        {"test/top1_err": 0.1, "test/top5_err": 0.1},
        "ILSVRC-2012 val, VGG net A, S = Q = 256 (VGG Table 3)",
        family="vgg",
        no_effect_within=NO_EFFECT_BAND,
    ),
)


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(value, bool):
        return str(value).lower() == str(wanted).lower()
    if isinstance(wanted, (int, float)):
        try:
            return math.isclose(float(value), float(wanted))
        except (TypeError, ValueError):
            return False
    return str(value) == str(wanted)


def _selects(cell: Cell, claim: Claim, side: Mapping[str, Any]) -> bool:
    model = cell.setting("model.name")
    if family_of(model) != claim.family:
        return False
    if claim.models is not None and model not in claim.models:
        return False
    if model in claim.not_models:
        return False
    return all(_same(cell.setting(k), v) for k, v in side.items())


@dataclass
class Contrast:
    """An effect, A - B averaged over pairs of cells that differ only in the ``own`` factors."""

    own: list[str]
    pairs: list[tuple[Cell, Cell]]
    claim: Claim | None = None
    label: str = field(default="")

    def __post_init__(self) -> None:
        if not self.label:
            parts = []
            for f in self.own:
                a = sorted({p[0].values[f] for p in self.pairs})
                b = sorted({p[1].values[f] for p in self.pairs})
                parts.append(f"{f}: {'/'.join(a)} − {'/'.join(b)}")
            self.label = "; ".join(parts)

    def usable(self, metric: str) -> list[tuple[Cell, Cell]]:
        return [
            (a, b) for a, b in self.pairs if a.metric_values(metric) and b.metric_values(metric)
        ]

    def estimate(self, metric: str, level: float = 0.95) -> Estimate:
        pairs = self.usable(metric)
        if not pairs:
            return Estimate(math.nan, None, None, 0)
        k = len(pairs)
        terms = []
        for a, b in pairs:
            terms += [
                (1.0 / k, a.metric_values(metric, SCALE)),
                (-1.0 / k, b.metric_values(metric, SCALE)),
            ]
        return contrast_ci(terms, level)

    def key(self) -> frozenset:
        return frozenset((a.key, b.key) for a, b in self.pairs)


def pair_cells(a_cells: Sequence[Cell], b_cells: Sequence[Cell], factors: Sequence[str]):
    """(own factors, pairs): the factors that tell A from B, and each A cell with the B cell that
    agrees with it on all the other factors."""
    own = [
        f
        for f in factors
        if {c.values[f] for c in a_cells}.isdisjoint({c.values[f] for c in b_cells})
    ]
    others = [f for f in factors if f not in own]
    pairs = [
        (a, b) for a in a_cells for b in b_cells if all(a.values[f] == b.values[f] for f in others)
    ]
    return own, pairs


def claim_contrasts(cells: Sequence[Cell], factors: Sequence[str]) -> list[Contrast]:
    """The paper's claims this grid can test, as contrasts."""
    found = []
    for claim in CLAIMS:
        a_cells = [c for c in cells if _selects(c, claim, claim.a)]
        b_cells = [c for c in cells if _selects(c, claim, claim.b)]
        if not a_cells or not b_cells:
            continue
        own, pairs = pair_cells(a_cells, b_cells, factors)
        if own and pairs:
            found.append(Contrast(own, pairs, claim))
    return found


def factor_contrasts(
    cells: Sequence[Cell],
    factors: Sequence[str],
    levels: Mapping[str, Sequence[str]],
    covered: Sequence[Contrast] = (),
) -> list[Contrast]:
    """Each level of each factor against the factor's first level, unless ``covered`` (the
    claims) holds the same comparison already, in either direction."""
    seen = {c.key() for c in covered} | {frozenset((b, a) for a, b in c.key()) for c in covered}
    found = []
    for f in factors:
        ref = levels[f][0]
        for level in levels[f][1:]:
            a_cells = [c for c in cells if c.values[f] == level]
            b_cells = [c for c in cells if c.values[f] == ref]
            others = [g for g in factors if g != f]
            pairs = [
                (a, b)
                for a in a_cells
                for b in b_cells
                if all(a.values[g] == b.values[g] for g in others)
            ]
            contrast = Contrast([f], pairs)
            if pairs and contrast.key() not in seen:
                found.append(contrast)
    return found


@dataclass(frozen=True)
class Wording:
    """How :func:`verdict` words its reason (the ReLU speed-up reads in its own terms)."""

    helps: str = "lowers the error"
    hurts: str = "raises the error"
    null: str = "0"

    def paper(self, value: float) -> str:
        return f"the paper's {value:+.1f}"


def verdict(est: Estimate, paper: float | None, wording: Wording = Wording()) -> tuple[str, str]:
    """(verdict, reason) for a claim that A lowers the metric; see the module docstring."""
    if math.isnan(est.mean):
        return INCONCLUSIVE, "no finished job on one side"
    if not est.has_ci:
        return INCONCLUSIVE, "needs 2+ finished seeds in every cell for an interval"
    ref = wording.paper(paper) if paper is not None else ""
    if est.high < 0:
        if paper is None:
            size = ""
        elif paper < est.low:
            size = f"; less than {ref}"
        elif paper > est.high:
            size = f"; more than {ref}"
        else:
            size = f"; {ref} is inside the CI"
        return REPRODUCED, wording.helps + size
    if est.low > 0:
        return NOT_REPRODUCED, wording.hurts
    if paper is not None and paper < est.low:
        return NOT_REPRODUCED, f"the CI holds {wording.null} and rules out {ref}"
    also = f" and {ref}" if paper is not None else ""
    return INCONCLUSIVE, f"the CI holds {wording.null}{also}"


def no_effect_verdict(est: Estimate, paper: float | None, band: float) -> tuple[str, str]:
    """(verdict, reason) for a claim that A makes no difference (|effect| <= ``band`` points);
    see the module docstring."""
    if math.isnan(est.mean):
        return INCONCLUSIVE, "no finished job on one side"
    if not est.has_ci:
        return INCONCLUSIVE, "needs 2+ finished seeds in every cell for an interval"
    if -band <= est.low and est.high <= band:
        inside = paper is not None and est.low <= paper <= est.high
        also = f"; the paper's {paper:+.1f} is inside the CI" if inside else ""
        return REPRODUCED, f"no effect: the CI lies within ±{band:g}{also}"
    if est.high < -band:
        return NOT_REPRODUCED, f"lowers the error by more than {band:g}"
    if est.low > band:
        return NOT_REPRODUCED, f"raises the error by more than {band:g}"
    return INCONCLUSIVE, f"the CI reaches beyond ±{band:g}"


def judge(claim: Claim, est: Estimate, metric: str) -> tuple[str, str]:
    """(verdict, reason) of ``claim`` on ``metric``, by the rule of its kind."""
    paper = claim.paper[metric]
    if claim.no_effect_within is not None:
        return no_effect_verdict(est, paper, claim.no_effect_within)
    return verdict(est, paper)


__all__ = [
    "CLAIMS",
    "FAMILIES",
    "INCONCLUSIVE",
    "METRICS",
    "NOT_REPRODUCED",
    "NO_EFFECT_BAND",
    "REPRODUCED",
    "SCALE",
    "Claim",
    "Contrast",
    "Wording",
    "claim_contrasts",
    "factor_contrasts",
    "family_of",
    "judge",
    "no_effect_verdict",
    "pair_cells",
    "verdict",
]
