"""Under DDP every rank runs the same code: the console log is written once (rank 0); the other
ranks pass on only warnings and errors, marked with their rank."""

from __future__ import annotations

import logging

from lightning.fabric.utilities.rank_zero import rank_zero_only

from alexnet.parallel.launch import log_on_rank_zero


def test_other_ranks_log_only_warnings_marked_with_their_rank(monkeypatch):
    root = logging.getLogger("alexnet_rank_test")
    root.propagate = False
    root.setLevel(logging.INFO)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))
    root.addHandler(handler)
    log_on_rank_zero(root)
    log_on_rank_zero(root)  # installing twice filters once
    assert len(handler.filters) == 1
    log = logging.getLogger("alexnet_rank_test.child")
    try:
        log.info("rank 0 says %s", "hello")
        monkeypatch.setattr(rank_zero_only, "rank", 1)
        log.info("every rank would say this")
        log.warning("only rank %d saw %s", 1, "this")
        monkeypatch.setattr(rank_zero_only, "rank", 0)
        log.info("back on rank 0")
    finally:
        root.removeHandler(handler)
    assert lines == ["rank 0 says hello", "[rank 1] only rank 1 saw this", "back on rank 0"]
