"""nonod's package data (``nonod/data``): built-in profiles, groups, credential routes.

The package is files on disk (a zipped install is not supported), so the data is found beside
this module. ``importlib.resources`` would do the same here, but loads its readers and
``zipfile`` into the daemon for it (about 0.5 MiB of an idle daemon's memory).
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"


def read_data(name: str) -> bytes:
    """The bytes of ``nonod/data/<name>``."""
    return (DATA_DIR / name).read_bytes()
