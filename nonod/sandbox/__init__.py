"""The sandbox engine: turn a ResolvedPolicy into a confined process.

Public face::

    async with open_launcher() as launcher:          # starts the fork server once
        proc = await launcher.launch(policy, request, stdio=(0, 1, 2))
        proc.pid, proc.enforcement                    # host pid, what each layer did
        status = await proc.wait_exited()             # ExitStatus(code=..., signal=...)
        proc.send_signal(signal.SIGTERM)

    status = await launch_and_wait(policy, request)   # one-shot, for tests and scripts

A launch either returns a running, confined process or raises ``LaunchError`` (the program's
code never ran). See ``_launcher`` for the steps between fork and execve.

The names are loaded on first use (PEP 562): the fork server imports ``_forkserver`` and the
launcher modules from this package, and must not load ``_api`` with it (trio and its
dependencies: about 6 MiB in the server, shared with every warm launcher it forks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._api import GuardReport as GuardReport
    from ._api import Launcher as Launcher
    from ._api import Sandboxed as Sandboxed
    from ._api import launch_and_wait as launch_and_wait
    from ._api import open_launcher as open_launcher
    from ._mode import MODE_SETTINGS as MODE_SETTINGS
    from ._mode import adapt_policy as adapt_policy
    from ._types import EnforcementReport as EnforcementReport
    from ._types import ExitStatus as ExitStatus
    from ._types import LaunchRequest as LaunchRequest
    from ._types import LayerReport as LayerReport

_HOME = {
    "GuardReport": "_api", "Launcher": "_api", "Sandboxed": "_api",
    "launch_and_wait": "_api", "open_launcher": "_api",
    "MODE_SETTINGS": "_mode", "adapt_policy": "_mode",
    "EnforcementReport": "_types", "ExitStatus": "_types", "LaunchRequest": "_types",
    "LayerReport": "_types",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
