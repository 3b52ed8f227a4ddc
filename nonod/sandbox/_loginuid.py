"""The fork server's loginuid, lent to a direct launcher's init (``_launcher.direct``).

The kernel lets a process set only its own loginuid, through ``/proc/self/loginuid``
(kernel/audit.c, ``audit_set_loginuid``): from unset without privilege; once set, only with
CAP_AUDIT_CONTROL in the initial user namespace, never with
``AUDIT_FEATURE_LOGINUID_IMMUTABLE``, and (``AUDIT_FEATURE_ONLY_UNSET_LOGINUID``) perhaps
only back to unset. Each valid loginuid written gives the writer a fresh audit session id;
the unset value written gives it the unset session id. A child gets both at ``clone``.

An init made by the fork server itself is born in a user namespace where it can no longer
set either; an outer launcher used to tag itself before it left the daemon's. Instead the
fork server, whose loginuid is unset, sets its own to the session's tag, makes the init
(``clone``: nothing else between the two writes), and writes the unset value back: its
loginuid and session id are then what they were, and the init, with everything it forks,
carries the tag and the session id the kernel assigned, which the fork server reads from
``/proc/<init>/sessionid`` afterwards (``session_of``).

Lent only when the fork server's loginuid is unset (a set one, written back, would come back
with a new session id, not its own) and a forked probe wrote the tag and the unset value
back (CAP_AUDIT_CONTROL, loginuids not immutable); otherwise the outer process tags itself,
as before. A write back that fails all the same (an administrator made loginuids immutable
since the probe) ends the fork server: every process it made from then on would carry the
session's tag and audit session, and the session's denials would be mixed with theirs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

LOGINUID = "/proc/self/loginuid"
UNSET = b"4294967295"  # (uid_t)-1: no loginuid, and the unset audit session
EXIT_STUCK = 70  # the fork server's status when it could not take its loginuid back


def _unset(fd: int) -> bool:
    return os.pread(fd, 16, 0).strip() == UNSET


def session_of(pid: int = 0) -> tuple[int, int]:
    """``(audit session id, 0)`` of ``pid`` (0: ours), the ``ses=`` of its records, or
    ``(0, errno)`` when it has none a record field can hold."""
    try:
        fd = os.open(f"/proc/{pid or 'self'}/sessionid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            ses = int(os.read(fd, 32))
        finally:
            os.close(fd)
    except OSError as exc:
        return 0, exc.errno or 0
    except ValueError:
        return 0, 22  # EINVAL: an unreadable session id
    return (ses, 0) if 0 < ses < 0x7FFFFFFF else (0, 75)  # EOVERFLOW: not a record field


class Lender:
    """The fork server's loginuid, lent for one ``clone`` at a time (``fork``)."""

    def __init__(self) -> None:
        self._fd = -1  # our /proc/self/loginuid, open while lending is possible
        self._usable: bool | None = None

    def usable(self, tag: int) -> bool:
        """Whether ``fork`` can lend ``tag`` (probed once, in a forked child)."""
        if self._usable is None:
            self._usable = self._probe(tag)
        return self._usable

    def _probe(self, tag: int) -> bool:
        try:
            fd = os.open(LOGINUID, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False  # no audit support in the kernel
        try:
            if not _unset(fd):
                raise OSError("our loginuid is set")
            pid = os.fork()
            if pid == 0:
                os._exit(_probe_child(tag))
            _, status = os.waitpid(pid, 0)
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                raise OSError("refused")
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def fork(self, tag: int, make: Callable[[], int]) -> int:
        """``make()`` (a fork: 0 in the child, its pid here) with our loginuid set to
        ``tag``, and unset again in this process once it returned. Raises OSError (then
        nothing was made, nothing lent) if the kernel refuses the tag: the outer launchers
        tag themselves from then on (``usable``)."""
        if self._fd < 0:
            raise OSError("no loginuid to lend")
        try:
            os.pwrite(self._fd, str(tag).encode(), 0)
        except OSError:
            self._usable = False
            raise
        try:
            pid = make()
        except BaseException:
            self._take_back()
            raise
        if pid:
            self._take_back()
        return pid

    def _take_back(self) -> None:
        try:
            os.pwrite(self._fd, UNSET, 0)
        except OSError as exc:
            sys.stderr.write(f"nonod fork server: loginuid not taken back ({exc}): ending\n")
            sys.stderr.flush()
            os._exit(EXIT_STUCK)


def _probe_child(tag: int) -> int:
    """In a forked child: 0 if our loginuid can be set to ``tag`` and unset again, and the
    audit session then is unset too (what ``Lender.fork`` does in the fork server)."""
    try:
        fd = os.open(LOGINUID, os.O_RDWR | os.O_CLOEXEC)
        os.pwrite(fd, str(tag).encode(), 0)
        os.pwrite(fd, UNSET, 0)
        ok = _unset(fd) and session_of() == (0, 75)  # unset: 4294967295
    except OSError:
        return 1
    return 0 if ok else 1
