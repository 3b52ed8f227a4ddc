"""cgroup v1: one hierarchy per controller (or per mounted set of them).

Each session gets ``<our group>/nono-<tag>/<session id>`` in the hierarchies it needs: memory,
pids and cpuacct (CPU time; a separate hierarchy on some hosts) always, cpu and blkio only
when it has a CPU or I/O limit (each hierarchy joined costs the launch an RCU grace period).
v1 has no ``cgroup.kill`` and no group-wide OOM kill: the daemon kills what remains itself,
and is told of OOM kills by an eventfd registered on ``memory.oom_control``.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, final

from . import _files
from ._detect import Hierarchy
from ._errors import CgroupError
from ._types import CgroupLimits, Missing

if TYPE_CHECKING:
    from ._backend import SessionGroup
    from ._types import Usage

PERIOD_US = 100_000
#: cpu.shares of a group of weight 100 (the default on both scales).
DEFAULT_SHARES = 1024


def shares_for(weight: int) -> int:
    return max(2, weight * DEFAULT_SHARES // 100)


def blkio_weight_for(weight: int) -> int:
    """v2's 1..10000 (100 default) onto v1's 10..1000 (500 default)."""
    return max(10, min(1000, weight * 5))


def _io_bytes(path: str, read_file: _files.Read) -> tuple[int, int]:
    read = written = 0
    for line in _files.read_or_empty(path, read_file).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            written += int(parts[2])
    return read, written


def apply_limits(dirs: dict[str, str], limits: CgroupLimits) -> list[Missing]:
    """Write ``limits`` into a session's groups (controller -> directory); what this kernel
    has no file for is returned. OSError if a write is refused."""
    missing: list[Missing] = []
    mem = dirs.get("memory")
    if limits.memory is not None and mem is not None:
        _files.write(os.path.join(mem, "memory.limit_in_bytes"), str(limits.memory))
        memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # the same value: no swap on top of the RAM limit
            _files.write(memsw, str(limits.memory))
    pids = dirs.get("pids")
    if limits.pids is not None and pids is not None:
        _files.write(os.path.join(pids, "pids.max"), str(limits.pids))
    cpu = dirs.get("cpu")
    if cpu is not None and limits.cpus is not None:
        _files.write(os.path.join(cpu, "cpu.cfs_period_us"), str(PERIOD_US))
        _files.write(os.path.join(cpu, "cpu.cfs_quota_us"),
                     str(max(1000, round(limits.cpus * PERIOD_US))))
    if cpu is not None and limits.cpu_weight is not None:
        _files.write(os.path.join(cpu, "cpu.shares"), str(shares_for(limits.cpu_weight)))
    blkio = dirs.get("blkio")
    if blkio is not None and limits.io_weight is not None:
        for name in ("blkio.weight", "blkio.bfq.weight"):
            path = os.path.join(blkio, name)
            if os.path.exists(path):
                _files.write(path, str(blkio_weight_for(limits.io_weight)))
                break
        else:
            missing.append(Missing(limit="io_weight", reason="this kernel's blkio "
                                   "hierarchy has no weight file (no proportional I/O "
                                   "scheduler: CFQ/BFQ)"))
    return missing


@final
class V1Group:
    """One session's groups, one per hierarchy."""

    version = 1

    def __init__(self, dirs: dict[str, str], missing: tuple[Missing, ...],
                 spare: SessionGroup | None = None) -> None:
        self._dirs = dirs
        self._spare = spare  # made for the session, unused (see ``adopt``): removed with it
        self.missing = missing
        self.procs = tuple(sorted({os.path.join(d, "cgroup.procs") for d in dirs.values()}))
        self.path = dirs.get("memory") or dirs.get("pids") or next(iter(dirs.values()), "")
        self._files = _files.ControlFiles()

    def _dir(self, controller: str) -> str | None:
        return self._dirs.get(controller)

    @property
    def dirs(self) -> dict[str, str]:
        """controller -> this session's directory in its hierarchy."""
        return dict(self._dirs)

    def usage(self) -> Usage:
        from ._types import Usage  # (nonod.protocol: the fork server never gets here)

        def number(controller: str, name: str) -> int:
            directory = self._dir(controller)
            return _files.read_int(os.path.join(directory, name), self._files.read) \
                if directory else 0

        def keyed(controller: str, name: str, key: str) -> int:
            directory = self._dir(controller)
            if directory is None:
                return 0
            return _files.read_keyed(os.path.join(directory, name), self._files.read).get(key, 0)

        blkio = self._dir("blkio")
        read, written = _io_bytes(os.path.join(
            blkio, "blkio.throttle.io_service_bytes_recursive"), self._files.read) \
            if blkio else (0, 0)
        return Usage(
            cpu_ns=number("cpuacct", "cpuacct.usage"),
            cpu_user_ns=number("cpuacct", "cpuacct.usage_user"),
            cpu_system_ns=number("cpuacct", "cpuacct.usage_sys"),
            memory_bytes=number("memory", "memory.usage_in_bytes"),
            memory_peak_bytes=number("memory", "memory.max_usage_in_bytes"),
            pids=number("pids", "pids.current"),
            pids_peak=number("pids", "pids.peak"),
            io_read_bytes=read,
            io_write_bytes=written,
            oom_kills=keyed("memory", "memory.oom_control", "oom_kill"),
            pids_limit_hits=keyed("pids", "pids.events", "max"),
        )

    def oom_kills(self) -> int:
        """What ``usage().oom_kills`` says, reading that file only."""
        mem = self._dir("memory")
        return _files.read_keyed(os.path.join(mem, "memory.oom_control"), self._files.read
                                 ).get("oom_kill", 0) if mem else 0

    def oom_eventfd(self) -> int | None:
        """An eventfd the kernel signals at each OOM in the memory group (and at its removal);
        the caller owns it. None without a memory hierarchy."""
        mem = self._dir("memory")
        if mem is None:
            return None
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ofd = os.open(os.path.join(mem, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _files.write(os.path.join(mem, "cgroup.event_control"), f"{efd} {ofd}")
            finally:
                os.close(ofd)
        except OSError:
            os.close(efd)
            return None
        return efd

    def kill(self) -> None:
        _files.kill_all(self._dirs.values())

    def remove(self, *, kill: bool = True) -> bool:
        self._files.close()
        # An ended session's groups are empty: one rmdir each, nothing to list or kill. A
        # group that is busy (processes or children left) is emptied and removed as before
        # (``kill=False``: left for a later try).
        busy = [d for d in set(self._dirs.values()) if not _files.remove_if_empty(d)]
        if busy and kill:
            _files.kill_all(busy)
        if self._spare is not None and self._spare.remove():
            self._spare = None
        if busy and not kill:
            return False
        return self._spare is None and all(_files.remove_tree(d) for d in busy)


@final
class V1Backend:
    """The daemon's subtree ``nono-<tag>`` in each writable v1 hierarchy we use."""

    version = 1

    def __init__(self, own: dict[str, str], tag: str) -> None:
        self._own = own  # controller -> our group's directory in its hierarchy
        self._tag = tag

    @classmethod
    def probe(cls, found: list[Hierarchy], tag: str) -> V1Backend | None:
        own: dict[str, str] = {}
        for h in found:
            if h.version == 1 and os.access(h.directory, os.W_OK):
                for controller in h.controllers:
                    own[controller] = h.directory
        if not own.keys() & {"memory", "pids"}:
            return None
        return cls(own, tag)

    def describe(self) -> str:
        return "cgroup v1 (" + ", ".join(sorted(self._own)) + ")"

    def subtrees(self) -> list[str]:
        return sorted({os.path.join(d, f"nono-{self._tag}") for d in self._own.values()})

    def prepare(self) -> list[str]:
        subtrees = self.subtrees()
        for sub in subtrees:
            with contextlib.suppress(FileExistsError):
                os.mkdir(sub, 0o755)
        return subtrees

    def _missing(self, limits: CgroupLimits) -> list[Missing]:
        out: list[Missing] = []
        need = {"memory": "memory", "pids": "pids", "cpus": "cpu", "cpu_weight": "cpu",
                "io_weight": "blkio"}
        for limit in limits.requested():
            controller = need[limit]
            if controller not in self._own:
                out.append(Missing(limit=limit, reason=f"no writable cgroup v1 {controller} "
                                   "hierarchy"))
        return out

    def create(self, name: str, limits: CgroupLimits,
               parent: SessionGroup | None = None) -> V1Group:
        """The session's groups with ``limits`` set; what cannot be set is listed in the
        group's ``missing``. Raises CgroupError (nothing left behind) if a group cannot be
        made or a limit the kernel offers is refused.

        With ``parent`` (a tool session's agent), each group is made inside the parent's in
        the same hierarchy, so the parent's limits bound both together (v1 memory counts
        hierarchically: ``memory.use_hierarchy`` is always 1 since Linux 5.11); a hierarchy
        the parent has no group in is used from the daemon's subtree, as for any session."""
        above = parent.dirs if isinstance(parent, V1Group) else {}
        missing = self._missing(limits)
        dirs: dict[str, str] = {}
        made: dict[str, str] = {}
        # Moving a process into a v1 group waits for an RCU grace period per hierarchy
        # (milliseconds): join only those that limit or account something for this session.
        used = {"memory", "pids", "cpuacct"}
        if limits.cpus is not None or limits.cpu_weight is not None:
            used.add("cpu")
        if limits.io_weight is not None:
            used.add("blkio")
        try:
            for controller, own in self._own.items():
                if controller not in used and own not in made:
                    continue
                path = made.get(own)
                if path is None:
                    sub = above.get(controller) or os.path.join(own, f"nono-{self._tag}")
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(sub, 0o755)
                    path = os.path.join(sub, name)
                    os.mkdir(path, 0o755)
                    made[own] = path
                dirs[controller] = path
            missing += apply_limits(dirs, limits)
        except OSError as exc:
            for path in made.values():
                _files.remove_tree(path)
            raise CgroupError.from_os(exc, "cannot create the session's cgroup") from exc
        return V1Group(dirs, tuple(missing))

    def pool(self) -> tuple[tuple[str, str], ...]:
        """(controller, subtree) pairs: where the fork server makes the groups warm
        launchers wait in (``adopt`` turns one into a session's)."""
        return tuple(sorted((c, os.path.join(own, f"nono-{self._tag}"))
                            for c, own in self._own.items()))

    def adopt(self, name: str, made: SessionGroup, *, keep_made: bool = False) -> V1Group:
        """The group ``name`` the fork server set up for a session (a warm launcher's, its
        limits written) in place of ``made``, which is removed with it when the session
        has ended (removing a v1 group takes milliseconds: not on the launch path), unless
        the caller keeps it (``keep_made``: it never held a process, and can serve another
        session with the same limits: see ``spare``)."""
        if not name or "/" in name or name.startswith("."):
            raise CgroupError(f"not a group name: {name!r}")
        dirs = {c: os.path.join(own, f"nono-{self._tag}", name) for c, own in self._own.items()}
        return V1Group(dirs, made.missing, spare=None if keep_made else made)

    def spare(self, made: SessionGroup, name: str) -> V1Group:
        """``made`` (never joined) renamed ``name`` in each hierarchy, to be kept for a later
        session (v1 renames a group within its parent; its limits stay). Raises OSError if
        it cannot be (what was renamed is renamed back)."""
        if not isinstance(made, V1Group):
            raise TypeError("not a v1 group")
        renamed: dict[str, str] = {}
        try:
            for old in sorted(set(made.dirs.values())):
                new = os.path.join(os.path.dirname(old), name)
                os.rename(old, new)
                renamed[old] = new
        except OSError:
            for old, new in renamed.items():
                with contextlib.suppress(OSError):
                    os.rename(new, old)
            raise
        return V1Group({c: renamed[d] for c, d in made.dirs.items()}, made.missing)

    def remove_stale(self) -> list[str]:
        """Remove every session group left in our subtrees (their daemon is gone: only one
        daemon runs per state directory), killing what still runs there; returns the session
        names removed (blocking, bounded)."""
        names: set[str] = set()
        for sub in self.subtrees():
            try:
                entries = [e for e in os.listdir(sub) if os.path.isdir(os.path.join(sub, e))]
            except FileNotFoundError:
                continue
            for entry in entries:
                if _files.remove_when_empty(os.path.join(sub, entry)):
                    names.add(entry)
        return sorted(names)
