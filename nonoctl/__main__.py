"""``nonoctl`` entry point (``python -m nonoctl``)."""

from __future__ import annotations

import sys


def main() -> None:
    # msgspec imports typing_extensions only to improve type-hint introspection we do not use,
    # and falls back to ``typing`` without it; skipping it saves ~10 ms of every command's
    # startup (the CLI's budget is 80 ms end to end). This process never needs it otherwise.
    sys.modules.setdefault("typing_extensions", None)  # type: ignore[arg-type]
    from ._cli import main as run

    sys.exit(run())


if __name__ == "__main__":
    main()
