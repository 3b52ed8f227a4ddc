"""A session's user namespace has its own inotify limits (``_launcher.SESSION_INOTIFY_LIMITS``)
whichever way it was launched: cold, on a plain warm launcher, on one with the view built.
The init writes them through its own fresh ``/proc`` (``limit_inotify``); read here from
inside the session, as the kernel holds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonod.sandbox import open_launcher
from nonod.sandbox._launcher import SESSION_INOTIFY_LIMITS

from .test_warm_views import _policy, _read

pytestmark = pytest.mark.userns

LIMITS = tuple(Path(f"/proc/sys/user/{name}") for name, _ in SESSION_INOTIFY_LIMITS)


async def test_every_launch_has_the_sessions_inotify_limits() -> None:
    expected = [str(limit) for _, limit in SESSION_INOTIFY_LIMITS]
    async with open_launcher("namespaces") as launcher:
        for _ in range(4):  # the first cold, later ones on a warm launcher where one is ready
            assert await _read(launcher, _policy("limits"), *LIMITS) == expected
