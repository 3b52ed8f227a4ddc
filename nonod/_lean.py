"""What the daemon's and the fork server's entry points keep out of their processes.

Three libraries the daemon uses load large modules for a detail it never needs. Each function
here runs before the library is first imported, and changes nothing of what the library does
for the daemon; where the module it avoids is loaded already, it changes nothing at all.
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


def import_msgspec() -> None:
    """Import msgspec without ``typing_extensions`` (and ``inspect``, ``ast``, ``dis``,
    ``tokenize`` with it, where nothing else loaded them): msgspec prefers its
    ``get_type_hints`` and falls back to ``typing``'s, which on Python >= 3.11 reads every
    annotation nonod uses (``nonoctl`` has always run so). Only msgspec's import sees it
    missing: a library imported later finds the real module."""
    _import_with_stand_ins("msgspec", {"typing_extensions": None})


def import_trio_websocket() -> None:
    """Import trio-websocket (the control server's protocol) without ``importlib.metadata``.

    trio-websocket asks ``importlib.metadata.version("trio")`` once, as it is imported, to
    learn whether trio predates 0.22. ``importlib.metadata`` brings ``email``, ``zipfile``,
    ``csv`` and a walk of the installed distributions: about 1.5 MiB of the daemon's memory
    for a version that trio carries itself. During that one import, ``importlib.metadata`` is
    a stand-in that answers for trio from ``trio.__version__`` (and loads the real module for
    any other name).
    """
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
    _import_with_stand_ins("trio_websocket", {"importlib.metadata": stand_in})


def _import_with_stand_ins(name: str, stand_ins: dict[str, types.ModuleType | None]) -> None:
    """Import ``name`` while each module of ``stand_ins`` that is not loaded yet is the given
    stand-in (None: missing); the stand-ins are gone afterwards."""
    if name in sys.modules or any(module in sys.modules for module in stand_ins):
        return
    sys.modules.update(stand_ins)  # type: ignore[arg-type]
    try:
        importlib.import_module(name)
    finally:
        for module, stand_in in stand_ins.items():
            if module in sys.modules and sys.modules[module] is stand_in:
                del sys.modules[module]
