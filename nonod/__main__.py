"""``nonod`` entry point (``python -m nonod``, the ``nonod`` script): see ``nonod._main``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    # structlog imports rich when it is installed (sigstore, a dev extra, brings it; so do
    # many system Pythons) for pretty tracebacks and locals, which the daemon never renders
    # (plain tracebacks, no locals): 3.5 MiB of the daemon's memory for nothing. This process
    # never needs it otherwise (as nonoctl skips typing_extensions).
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from ._main import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
