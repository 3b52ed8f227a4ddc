"""``nonoctl approve --save-to-profile``: the approved host, written into the profile file
the session was launched from.

Only a session launched from a profile *file* (``--profile /path/x.json``) can be saved to,
and only by the file's owner: the file is opened without following a symlink, as the caller
(the system daemon lends none of its rights), and refused unless the caller owns it. The new
text goes to a temporary file beside it (same mode), is fsynced, then renamed over the old
one: a reader sees the old profile or the new one, never half of either. The change is
returned as a unified diff. The profile is rewritten as indented JSON (key order kept).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Final

from .. import _callerfs
from ._errors import SaveRefused

MAX_PROFILE_BYTES: Final = 1 << 20


def add_host(path: str, host: str, uid: int) -> str:
    """Blocking: add ``host`` to ``network.allow_domain`` of the profile at ``path``, which
    ``uid`` must own; the diff (empty when the host was already listed)."""
    if not os.path.isabs(path) or not path.endswith(".json"):
        raise SaveRefused(f"the session's profile `{path}` is not a profile file",
                          hint="launch with --profile /path/to/profile.json to save to it, or "
                          "add the host to the named profile yourself")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SaveRefused(f"{path}: {os.strerror(exc.errno or 0)}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
            raise SaveRefused(f"{path} is not a regular file of yours",
                              hint="only the profile file's owner may save approvals to it")
        old = handle.read(MAX_PROFILE_BYTES + 1)
    if len(old) > MAX_PROFILE_BYTES:
        raise SaveRefused(f"{path} is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        profile: Any = json.loads(old)
        network = profile.setdefault("network", {})
        domains = network.setdefault("allow_domain", [])
    except (ValueError, AttributeError) as exc:
        raise SaveRefused(f"{path} is not a profile this can edit: {exc}") from None
    if not isinstance(domains, list):
        raise SaveRefused(f"{path}: network.allow_domain is not a list")
    entry = host.strip("[]")
    if entry in domains:
        return ""
    domains.append(entry)
    new = (json.dumps(profile, indent=2, ensure_ascii=False) + "\n").encode()
    target = Path(path)
    temporary = target.with_name(f".{target.name}.nonod-{secrets.token_hex(6)}")
    out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                  | os.O_CLOEXEC, stat.S_IMODE(info.st_mode))
    try:
        with os.fdopen(out, "wb") as handle:
            handle.write(new)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    import difflib  # here: the daemon loads this module at start, and saves seldom

    return "".join(difflib.unified_diff(
        old.decode("utf-8", "replace").splitlines(keepends=True),
        new.decode().splitlines(keepends=True), fromfile=path, tofile=path))


async def save_host(caller: Any, path: str, host: str, uid: int) -> str:
    """:func:`add_host` as ``caller`` (None: as the daemon itself, a user daemon's caller)."""
    return await _callerfs.run_as(caller, lambda: add_host(path, host, uid),
                                  what=f"the profile {path}")
