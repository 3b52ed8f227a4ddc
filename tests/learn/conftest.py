"""Fixtures for the learn tests: a scratch tree the sessions can see."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh directory that is not under /tmp (each session, the learn session included,
    gets a private /tmp, so files a program must find cannot live there), that other uids
    can enter. As root it lives under /var/lib/nono-tests (the checkout may be under /root,
    0700, as CI's clone can be), otherwise beside this file; it is removed afterwards."""
    base = HERE
    if os.getuid() == 0:
        base = Path("/var/lib/nono-tests")
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        base.chmod(0o755)
    path = Path(tempfile.mkdtemp(prefix=".scratch-", dir=base))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def needs_tools() -> pytest.MarkDecorator:
    missing = [tool for tool in ("/usr/bin/strace", "/usr/bin/python3")
               if not os.access(tool, os.X_OK)]
    return pytest.mark.skipif(bool(missing), reason=f"missing {', '.join(missing)}")
