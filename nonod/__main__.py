"""``nonod`` entry point (``python -m nonod``, the ``nonod`` script): see ``nonod._main``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    # Before structlog, msgspec and trio-websocket are imported: what they would load for
    # nothing (``nonod._lean``).
    from . import _lean

    _lean.keep_out_rich()
    _lean.import_structlog()
    _lean.import_msgspec()
    _lean.import_trio_websocket()
    from ._main import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
