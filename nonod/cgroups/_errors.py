"""Errors of the cgroups package: ``limits.*`` codes."""

from __future__ import annotations

import os

from ..errors import NonoError


class CgroupError(NonoError):
    """A session's cgroup could not be made or set up: the launch is refused."""

    code = "limits.cgroup"

    @classmethod
    def from_os(cls, exc: OSError, what: str) -> CgroupError:
        where = f" ({exc.filename})" if exc.filename else ""
        return cls(f"{what}: {os.strerror(exc.errno or 0)}{where}",
                   hint="`nonoctl doctor` shows which cgroup hierarchies the daemon can use")
