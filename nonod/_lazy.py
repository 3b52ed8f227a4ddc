"""A package's public names, loaded from their modules on first use (PEP 562).

A package ``__init__`` that imports every submodule makes whoever needs one name load them all:
the fork server the daemon's async engine, the idle daemon the whole proxy for one type the
approval queue names. A package that exports lazily keeps its public face for readers and type
checkers in an ``if TYPE_CHECKING:`` block and gives the running code this::

    if TYPE_CHECKING:
        from ._api import Launcher as Launcher
    else:
        __getattr__, __dir__ = exports(__name__, {"_api": ("Launcher",)})

``from package import Launcher`` then imports ``package._api`` the first time it is asked for;
``from package import _api`` keeps working (the import system loads a submodule it does not
find as an attribute).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def exports(package: str, homes: Mapping[str, tuple[str, ...]]
            ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``homes`` maps each submodule (relative
    name) to the names it exports."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def getattr_(name: str) -> object:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # the next lookup is an ordinary one
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home_of})

    return getattr_, dir_
