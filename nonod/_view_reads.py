"""Whether a session's view shows a host path to read: the test a pin must pass before it
puts bytes at a path the profile may not grant (a trust policy's ``files``).

A path is shown when a read grant holds it (a file grant: that very path; a directory grant:
it or anything beneath) and no denial masks it. A grant of ``/tmp``, ``/var/tmp`` or
``/dev/shm`` itself is the session's own tmpfs (``nonod.sandbox._mounts``), never the host's
directory, so it shows nothing of the host. ``path`` must be canonical, as grants are.
"""

from __future__ import annotations

from ._writable_links import PRIVATE_TMPS, inside
from .policy import ResolvedPolicy


def shown_in_view(path: str, policy: ResolvedPolicy) -> bool:
    """Whether the session may read the host's ``path`` through its grants."""
    if any(inside(path, denial.path) for denial in policy.denials):
        return False
    return any(
        grant.access.reads and grant.path not in PRIVATE_TMPS
        and (path == grant.path if grant.is_file else inside(path, grant.path))
        for grant in policy.grants)


__all__ = ["shown_in_view"]
