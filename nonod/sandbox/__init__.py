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

The names load on first use (``nonod._lazy``): the fork server imports the launcher modules of
this package and must not load ``_api`` (trio and what comes with it, about 6 MiB in the
server and shared with every warm launcher it forks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._api import GuardReport as GuardReport
    from ._api import Launcher as Launcher
    from ._api import Sandboxed as Sandboxed
    from ._api import launch_and_wait as launch_and_wait
    from ._api import open_launcher as open_launcher
    from ._mode import MODE_SETTINGS as MODE_SETTINGS
    from ._mode import adapt_policy as adapt_policy
    from ._plan import find_executable as find_executable
    from ._plan import sanitize_env as sanitize_env
    from ._types import EnforcementReport as EnforcementReport
    from ._types import ExitStatus as ExitStatus
    from ._types import LaunchRequest as LaunchRequest
    from ._types import LayerReport as LayerReport
else:
    __getattr__, __dir__ = exports(__name__, {
        "_api": ("GuardReport", "Launcher", "Sandboxed", "launch_and_wait", "open_launcher"),
        "_mode": ("MODE_SETTINGS", "adapt_policy"),
        "_plan": ("find_executable", "sanitize_env"),
        "_types": ("EnforcementReport", "ExitStatus", "LaunchRequest", "LayerReport"),
    })
