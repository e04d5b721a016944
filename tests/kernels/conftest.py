"""Fixtures that switch Triton's CPU interpreter on or off for one test.

TRITON_INTERPRET=1 runs the kernels on CPU tensors; alexnet.kernels.lrn wraps its kernels lazily
per interpreter setting, so setting the variable per test works whether or not triton was
imported earlier in the session.
"""

import importlib.util

import pytest

from alexnet.kernels import lrn as klrn

HAS_TRITON = importlib.util.find_spec("triton") is not None


@pytest.fixture
def interpret(monkeypatch):
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert klrn._interpreting()


@pytest.fixture
def no_interpret(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not klrn._interpreting()
