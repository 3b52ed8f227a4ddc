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
    can enter. It lives beside this file and is removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=".scratch-", dir=HERE))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def needs_tools() -> pytest.MarkDecorator:
    missing = [tool for tool in ("/usr/bin/strace", "/usr/bin/python3")
               if not os.access(tool, os.X_OK)]
    return pytest.mark.skipif(bool(missing), reason=f"missing {', '.join(missing)}")
