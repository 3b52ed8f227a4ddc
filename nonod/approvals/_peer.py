"""Which process of a session opened a proxy connection, for its pending approval.

The proxy knows the client's TCP port. In the session's network namespace (seen through
``/proc/<session pid>/net/tcp``) that port names one socket inode; the process holding a
descriptor on ``socket:[inode]`` is the one that asked. Best effort, blocking (run it in a
thread), bounded: any failure (the client already gone, a process that exited meanwhile,
/proc not readable) gives None and the approval names the session's program instead.
"""

from __future__ import annotations

import os
from typing import Final

#: Processes looked at, at most, for one connection.
MAX_PROCESSES: Final = 65536
#: Descriptors looked at, at most, for one connection: a session's processes may hold
#: millions (each a ``readlink`` in the daemon, per question the program asks).
MAX_DESCRIPTORS: Final = 4096


def _socket_inode(session_pid: int, port: int) -> str | None:
    """The inode of the socket on local ``port`` in ``session_pid``'s network namespace.
    Entries with no socket (inode 0: a closed connection's ``TIME_WAIT``, which may share
    the port, a busy host reusing its ephemeral ports) are passed over."""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{session_pid}/net/{table}") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if (len(fields) > 9 and fields[9] != "0"
                            and int(fields[1].rsplit(":", 1)[1], 16) == port):
                        return fields[9]
        except (OSError, ValueError, IndexError):
            continue
    return None


def _group(pid: int | str) -> str | None:
    """The cgroup of ``pid`` in the hierarchy the daemon gives each session a group of its
    own in: v1's ``pids`` where it is bound (hybrid hosts, whose v2 tree holds no session
    groups), else v2's; with the hierarchy's name and a trailing ``/``. None if unknown."""
    unified = None
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "pids" in controllers.split(","):
                    return f"pids:{path.rstrip('/')}/"
                if line.startswith("0::"):
                    unified = f"0:{path.rstrip('/')}/"
    except (OSError, ValueError):
        return None
    return unified


def _holder(inode: str, session_pid: int) -> int | None:
    """The process holding ``socket:[inode]``: one of the session's (in its cgroup or one
    below, its tools'; the host's processes are not looked at, unless the session has no
    group of its own), within ``MAX_DESCRIPTORS`` descriptors looked at."""
    target = f"socket:[{inode}]"
    ours = _group(session_pid)
    if ours is None or ours == _group("self"):
        ours = None  # no group of its own: every process
    budget = MAX_DESCRIPTORS
    for count, name in enumerate(os.listdir("/proc")):
        if count > MAX_PROCESSES:
            return None
        if not name.isdigit():
            continue
        if ours is not None and not (_group(name) or "").startswith(ours):
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            budget -= 1
            if budget < 0:
                return None
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") == target:
                    return int(name)
            except OSError:
                continue
    return None


def find_client(session_pid: int, port: int) -> tuple[int, tuple[str, ...]] | None:
    """The pid and command line of the process whose socket has local ``port`` in the
    network namespace of ``session_pid``; None when that cannot be told."""
    if port <= 0 or session_pid <= 0:
        return None
    inode = _socket_inode(session_pid, port)
    if inode is None or inode == "0":
        return None
    pid = _holder(inode, session_pid)
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read(64 * 1024)
    except OSError:
        return None
    return pid, tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)
