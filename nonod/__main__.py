"""``nonod`` entry point (``python -m nonod``, the ``nonod`` script): see ``nonod._main``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def _drop_working_directory() -> None:
    """``python -m nonod`` puts the working directory first on ``sys.path``: a module planted
    there (``structlog.py``) would run inside the daemon at its first import, and the fork
    server inherits the path. Our own package is already imported; nothing else of ours is
    looked up there."""
    if sys.flags.safe_path or not sys.path:
        return
    try:
        cwd = os.getcwd()
    except OSError:  # removed: ``-m`` made no entry for it (or "")
        cwd = ""
    if sys.path[0] in ("", cwd):
        del sys.path[0]


def main(argv: Sequence[str] | None = None) -> int:
    # Before hashlib, structlog, msgspec and trio-websocket are imported: what they would load for
    # nothing (``nonod._lean``).
    from . import _lean

    _lean.keep_out_rich()
    _lean.import_hashlib()
    _lean.import_structlog()
    _lean.import_msgspec()
    _lean.import_trio_websocket()
    from ._main import main as run

    return run(argv)


if __name__ == "__main__":
    _drop_working_directory()
    sys.exit(main())
