"""A launcher forked from a fork server that holds many sessions' descriptors inherits
descriptor numbers past 1024 (the hub keeps a few per guarded session): it must wait on them
with ``poll``. ``select`` refuses them (ValueError), which ended every session launched once
about 200 were live (the 1000-session fleet of ``bench/daemon.py``)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator

import pytest

from nonod.sandbox._launcher import _readable

HIGH = 1500


@pytest.fixture
def high_pipe() -> Iterator[tuple[int, int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < HIGH + 1:
        pytest.skip(f"the hard descriptor limit ({hard}) is below {HIGH + 1}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH + 1), hard))
    r, w = os.pipe()
    os.dup2(r, HIGH)
    os.close(r)
    yield HIGH, w
    os.close(HIGH)
    os.close(w)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_descriptor_past_1024_is_waited_on(high_pipe: tuple[int, int]) -> None:
    r, w = high_pipe
    began = time.monotonic()
    assert _readable([r], 0.05) == []
    assert time.monotonic() - began >= 0.04  # it did wait
    os.write(w, b"x")
    assert _readable([r], 1.0) == [r]


def test_the_end_of_a_pipe_past_1024_is_readable(high_pipe: tuple[int, int]) -> None:
    r, w = high_pipe
    os.close(os.dup(w))  # (the fixture closes w)
    os.close(w)
    new_w = os.open("/dev/null", os.O_WRONLY)
    try:
        assert _readable([r], None) == [r]  # no writer left: end of file
    finally:
        os.dup2(new_w, w)  # the fixture's close of w stays valid
        os.close(new_w)
