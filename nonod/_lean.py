"""What the daemon's entry point keeps out of its process (``nonod/__main__.py``).

Two libraries the daemon uses load large modules for a detail it never needs; each function
here is called before the library is first imported, and changes nothing of what the library
does for the daemon.
"""

from __future__ import annotations

import importlib
import sys
import types


def keep_out_rich() -> None:
    """structlog imports rich when it is installed (sigstore, a dev extra, brings it; so do
    many system Pythons) for pretty tracebacks and locals, which the daemon never renders
    (plain tracebacks, no locals): 3.5 MiB of the daemon's memory for nothing."""
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]


def import_trio_websocket() -> None:
    """Import trio-websocket (the control server's protocol) without ``importlib.metadata``.

    trio-websocket asks ``importlib.metadata.version("trio")`` once, as it is imported, to
    learn whether trio predates 0.22. ``importlib.metadata`` brings ``email``, ``zipfile``,
    ``csv`` and a walk of the installed distributions: about 1.5 MiB of the daemon's memory
    for a version that trio carries itself. During that one import, ``importlib.metadata`` is
    a stand-in that answers for trio from ``trio.__version__`` (and loads the real module for
    any other name); it is gone afterwards. Where the real module is loaded already, nothing
    is replaced.
    """
    if "trio_websocket" in sys.modules or "importlib.metadata" in sys.modules:
        return
    import trio

    stand_in = types.ModuleType("importlib.metadata")

    def version(name: str) -> str:
        if name == "trio":
            return str(trio.__version__)
        if sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]
        real: str = importlib.import_module("importlib.metadata").version(name)
        return real

    stand_in.version = version  # type: ignore[attr-defined]
    sys.modules["importlib.metadata"] = stand_in
    try:
        importlib.import_module("trio_websocket")
    finally:
        if sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]
