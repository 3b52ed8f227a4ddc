"""The program a launch runs, found with the caller's rights (the system daemon).

The engine finds ``argv[0]`` (a path, or a name searched in the session's ``PATH``) when it
builds the plan, with the daemon's identity: as root, a path in another user's 0700 home was
found when it existed and "no such executable" when it did not, an answer about files the
caller may not look at. The system daemon therefore finds the program first in a worker
thread acting as the caller (``nonod._callerfs``), and the engine runs what it found.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import _callerfs, sessions
from ..policy import ResolvedPolicy


async def program_path(caller: sessions.Caller, policy: ResolvedPolicy, name: str,
                       env: Mapping[str, str], cwd: str) -> str:
    """``name``'s path as ``caller`` would find it with the session's ``PATH``; the engine's
    ``LaunchError`` (``launch.failed``, step ``exec``) when it finds none."""
    return await _callerfs.run_as(
        caller, lambda: sessions.find_program(policy, name, env, cwd), what=name)
