"""cgroup v2: one unified hierarchy.

The no-internal-processes rule: a group whose children have controllers enabled holds no
processes itself. So the daemon's own group gets a leaf ``nonod`` for the daemon's processes
when that is needed to enable controllers below it; sessions then live in
``<own>/nono-<tag>/<session id>``. ``memory.oom.group`` makes an OOM kill take the whole
session, and ``cgroup.kill`` ends what remains.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, final

from . import _files
from ._detect import Hierarchy
from ._errors import CgroupError
from ._types import CgroupLimits, Missing, Usage

if TYPE_CHECKING:
    from ._backend import SessionGroup

PERIOD_US = 100_000
WANTED = ("memory", "pids", "cpu", "io")
_NEEDS = {"memory": "memory", "pids": "pids", "cpus": "cpu", "cpu_weight": "cpu",
          "io_weight": "io"}


def _io_bytes(path: str, read_file: _files.Read) -> tuple[int, int]:
    read = written = 0
    for line in _files.read_or_empty(path, read_file).splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                written += int(value)
    return read, written


@final
class V2Group:
    version = 2

    def __init__(self, path: str, controllers: frozenset[str],
                 missing: tuple[Missing, ...]) -> None:
        self.path = path
        self.procs: tuple[str, ...] = (os.path.join(path, "cgroup.procs"),)
        self.missing = missing
        self._controllers = controllers
        self._files = _files.ControlFiles()

    def _f(self, name: str) -> str:
        return os.path.join(self.path, name)

    def usage(self) -> Usage:
        reader = self._files.read

        def number(name: str) -> int:
            return _files.read_int(self._f(name), reader)

        def keyed(name: str) -> dict[str, int]:
            return _files.read_keyed(self._f(name), reader)

        cpu = keyed("cpu.stat")
        read, written = _io_bytes(self._f("io.stat"), reader)
        return Usage(
            cpu_ns=cpu.get("usage_usec", 0) * 1000,
            cpu_user_ns=cpu.get("user_usec", 0) * 1000,
            cpu_system_ns=cpu.get("system_usec", 0) * 1000,
            memory_bytes=number("memory.current"),
            memory_peak_bytes=number("memory.peak"),
            pids=number("pids.current"),
            pids_peak=number("pids.peak"),
            io_read_bytes=read,
            io_write_bytes=written,
            oom_kills=keyed("memory.events").get("oom_kill", 0),
            pids_limit_hits=keyed("pids.events").get("max", 0),
        )

    def oom_kills(self) -> int:
        return _files.read_keyed(self._f("memory.events"), self._files.read).get("oom_kill", 0)

    def oom_eventfd(self) -> int | None:
        return None  # memory.oom.group: the kernel kills the whole session itself

    def kill(self) -> None:
        try:
            _files.write(self._f("cgroup.kill"), "1")
        except OSError:
            _files.kill_all([self.path])

    def remove(self, *, kill: bool = True) -> bool:
        self._files.close()
        if not kill:
            return _files.remove_if_empty(self.path)
        self.kill()
        return _files.remove_tree(self.path)


@final
class V2Backend:
    version = 2

    def __init__(self, own: str, tag: str, controllers: frozenset[str]) -> None:
        self._own = own
        self._tag = tag
        self.controllers = controllers

    @classmethod
    def probe(cls, found: list[Hierarchy], tag: str) -> V2Backend | None:
        for h in found:
            if h.version == 2 and os.access(h.directory, os.W_OK):
                try:
                    offered = frozenset(_files.read(
                        os.path.join(h.directory, "cgroup.controllers")).split())
                except OSError:
                    continue
                return cls(h.directory, tag, offered & frozenset(WANTED))
        return None

    def describe(self) -> str:
        return "cgroup v2 (" + (", ".join(sorted(self.controllers)) or "no controllers") + ")"

    def subtrees(self) -> list[str]:
        return [os.path.join(self._own, f"nono-{self._tag}")]

    def prepare(self) -> list[str]:
        return [self._prepare()]

    def _enable(self, directory: str) -> None:
        if not self.controllers:
            return
        value = " ".join(f"+{c}" for c in sorted(self.controllers))
        _files.write(os.path.join(directory, "cgroup.subtree_control"), value)

    def _prepare(self) -> str:
        sub = self.subtrees()[0]
        if os.path.isdir(sub):
            return sub
        try:
            self._enable(self._own)
        except OSError:
            # Processes in our own group: move them to a leaf first (no internal processes).
            leaf = os.path.join(self._own, "nonod")
            with contextlib.suppress(FileExistsError):
                os.mkdir(leaf, 0o755)
            for pid in _files.pids_in(self._own):
                with contextlib.suppress(ProcessLookupError):
                    _files.write(os.path.join(leaf, "cgroup.procs"), str(pid))
            self._enable(self._own)
        with contextlib.suppress(FileExistsError):
            os.mkdir(sub, 0o755)
        self._enable(sub)
        return sub

    def create(self, name: str, limits: CgroupLimits,
               parent: SessionGroup | None = None) -> V2Group:
        """The session's group with ``limits`` set. ``parent`` is not nested into: a v2
        group with processes cannot have children with controllers (no internal processes),
        and a session's processes live in its group itself; a tool session's group stays a
        sibling of its agent's (see docs/tool-sandboxes.md)."""
        missing = [Missing(limit=limit, reason=f"the cgroup v2 {_NEEDS[limit]} controller is "
                           "not available to the daemon")
                   for limit in limits.requested() if _NEEDS[limit] not in self.controllers]
        path = ""
        try:
            path = os.path.join(self._prepare(), name)
            os.mkdir(path, 0o755)
            self._apply(path, limits)
        except OSError as exc:
            if path:
                _files.remove_tree(path)
            raise CgroupError.from_os(exc, "cannot create the session's cgroup") from exc
        return V2Group(path, self.controllers, tuple(missing))

    def _apply(self, path: str, limits: CgroupLimits) -> None:
        def put(name: str, value: str) -> None:
            _files.write(os.path.join(path, name), value)

        have = self.controllers
        if "memory" in have:
            put("memory.oom.group", "1")
            if limits.memory is not None:
                put("memory.max", str(limits.memory))
                with contextlib.suppress(FileNotFoundError):
                    put("memory.swap.max", "0")
        if "pids" in have and limits.pids is not None:
            put("pids.max", str(limits.pids))
        if "cpu" in have and limits.cpus is not None:
            put("cpu.max", f"{max(1000, round(limits.cpus * PERIOD_US))} {PERIOD_US}")
        if "cpu" in have and limits.cpu_weight is not None:
            put("cpu.weight", str(limits.cpu_weight))
        if "io" in have and limits.io_weight is not None:
            put("io.weight", f"default {limits.io_weight}")

    def pool(self) -> tuple[tuple[str, str], ...]:
        return ()  # v2: sessions join their group at launch (CLONE_INTO_CGROUP: not yet)

    def adopt(self, name: str, made: SessionGroup, *, keep_made: bool = False) -> SessionGroup:
        raise CgroupError("cgroup v2 launchers do not wait in groups of their own")

    def spare(self, made: SessionGroup, name: str) -> SessionGroup:
        raise CgroupError("cgroup v2 launchers do not wait in groups of their own")

    def remove_stale(self) -> list[str]:
        sub = self.subtrees()[0]
        try:
            entries = [e for e in os.listdir(sub) if os.path.isdir(os.path.join(sub, e))]
        except FileNotFoundError:
            return []
        removed = []
        for entry in entries:
            path = os.path.join(sub, entry)
            with contextlib.suppress(OSError):
                _files.write(os.path.join(path, "cgroup.kill"), "1")
            if _files.remove_when_empty(path):
                removed.append(entry)
        return sorted(removed)
