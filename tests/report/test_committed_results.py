"""Every committed grid under results/ regenerates its report byte for byte (`make report`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from alexnet.report import write_report

REPO = Path(__file__).resolve().parents[2]
GRIDS = sorted(p.parent for p in (REPO / "results").glob("*/report.csv"))
FILES = ("report.md", "report.csv", "report.png")


@pytest.mark.parametrize("grid", GRIDS, ids=[g.name for g in GRIDS])
def test_committed_report_regenerates_byte_for_byte(grid, tmp_path, monkeypatch):
    copy = tmp_path / "results" / grid.name
    shutil.copytree(grid, copy, ignore=shutil.ignore_patterns("checkpoints", "wandb", *FILES))
    monkeypatch.chdir(tmp_path)  # the report names its sweep dir as given: results/<grid>
    write_report(Path("results") / grid.name, wandb=False)
    for name in FILES:
        assert (copy / name).read_bytes() == (grid / name).read_bytes(), name
