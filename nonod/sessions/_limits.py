"""Each session's cgroup: made before its launch, read for ``ps``/``inspect``, watched for
OOM kills, and removed (with anything left in it) when the session ends.

The launcher joins the group before anything else (``LaunchRequest.cgroup_procs``), so no
process of the session runs outside its limits. A limit that was asked for (the profile, a
flag or nonod.toml) and cannot be applied refuses the launch at step ``cgroup``, unless the
profile accepts ``"allow_degraded": ["limits"]``; the pid cap every session gets by default
(``max_processes``) is applied where a pids controller is, and otherwise left to
RLIMIT_NPROC, as before.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Final, final

import msgspec
import structlog
import trio

from .. import protocol as p
from .._units import describe_limits
from ..cgroups import CgroupBackend, CgroupLimits, SessionGroup, Usage, _sweep, open_backend
from ..errors import EnforcementUnavailable
from ..policy import Denial, ResolvedPolicy
from ..sandbox import EnforcementReport, LayerReport

log = structlog.get_logger()

#: The outer launcher and the session's init count in its pid cap too.
LAUNCHER_PIDS: Final = 2
#: Groups made for launches that went warm (the session runs in its warm launcher's group)
#: are kept for later launches with the same limits, at most this many per set of limits
#: and for this many sets: making and removing a v1 group costs milliseconds of kernel time.
SPARES_PER_LIMITS: Final = 2
SPARE_LIMITS_KEPT: Final = 8
#: The name of a kept group starts with this (then it is no session's yet).
SPARE_PREFIX: Final = "spare-"
REMOVE_TIMEOUT: Final = 5.0


def cgroup_limits(policy: ResolvedPolicy) -> tuple[CgroupLimits, tuple[str, ...]]:
    """What the session's group is limited to, and which of those were asked for (required:
    the rest, the default pid cap, is best effort)."""
    lim = policy.limits
    pids = policy.max_processes + LAUNCHER_PIDS if policy.max_processes else None
    wanted = CgroupLimits(memory=lim.memory, pids=pids, cpus=lim.cpus,
                          cpu_weight=lim.cpu_weight, io_weight=lim.io_weight)
    required = tuple(k for k in wanted.requested()
                     if k != "pids" or lim.max_processes is not None)
    return wanted, required


CGROUP_TREE: Final = "/sys/fs/cgroup"


def hide_cgroup_tree(policy: ResolvedPolicy) -> ResolvedPolicy:
    """``policy`` with ``/sys/fs/cgroup`` masked where a grant would show it (``/sys`` is in
    nono's default system group): the host's tree names every session's group and shows its
    figures. The session's own view of its group is its cgroup namespace."""
    shown = any(g.path == CGROUP_TREE or CGROUP_TREE.startswith(g.path.rstrip("/") + "/")
                for g in policy.grants)
    if not shown or any(d.path == CGROUP_TREE for d in policy.denials):
        return policy
    return msgspec.structs.replace(
        policy, denials=(*policy.denials, Denial(path=CGROUP_TREE, source="limits")))


def _describe(limits: CgroupLimits) -> str:
    text = describe_limits(
        memory=limits.memory, cpus=limits.cpus, cpu_weight=limits.cpu_weight,
        io_weight=limits.io_weight,
        max_processes=None if limits.pids is None else limits.pids - LAUNCHER_PIDS)
    return (text + " (no swap)" if limits.memory is not None else text) or "accounting only"


def _refuse_or(policy: ResolvedPolicy, report: LayerReport) -> LayerReport:
    if report.state != "applied" and "limits" not in policy.allow_degraded:
        raise EnforcementUnavailable(
            f"the session's resource limits cannot be enforced: {report.reason}",
            step="cgroup",
            hint='accept it with "nonod": {"allow_degraded": ["limits"]} in the profile, or '
                 "give the daemon a cgroup subtree of its own (`nonoctl doctor`)")
    return report


@final
class SessionCgroups:
    """The daemon's cgroup subtree for its sessions (None where it has none, and why)."""

    def __init__(self, backend: CgroupBackend | None, why: str) -> None:
        self.backend = backend
        self.why = why
        self._held: list[int] = []  # our subtrees, locked (``cgroups._sweep``)
        #: Unused groups (see ``SPARES_PER_LIMITS``), by the limits written in them. Only
        #: the event loop takes and returns them; what is left goes at ``close``.
        self._spares: dict[CgroupLimits, list[SessionGroup]] = {}

    @classmethod
    def open(cls, state_dir: Path) -> SessionCgroups:
        """Blocking: find the hierarchies, remove groups a previous daemon left, hold our
        subtrees and clear those of daemons that are gone (``cgroups._sweep``)."""
        backend, why = open_backend(str(state_dir))
        opened = cls(backend, why)
        if backend is not None:
            try:  # first: a sweep starting now leaves what the predecessor left to us
                opened._held = _sweep.hold(backend.prepare)
            except OSError as exc:
                log.warning("cannot make the daemon's cgroup subtree yet", error=str(exc))
            stale = backend.remove_stale()
            if stale:
                log.warning("removed cgroups of sessions that died with the previous daemon",
                            sessions=stale)
            opened._sweep()
            log.info("session cgroups", backend=backend.describe(),
                     subtrees=backend.subtrees())
        else:
            log.warning("sessions get no cgroup", reason=why)
        return opened

    def _sweep(self) -> None:
        if self.backend is None:
            return
        swept = _sweep.sweep(self.backend.subtrees())
        if swept:
            log.info("removed the cgroup subtrees of daemons that are gone",
                     count=len(swept), first=swept[:3])

    async def make(self, session_id: str, policy: ResolvedPolicy,
                   parent: SessionGroup | None = None
                   ) -> tuple[SessionGroup | None, tuple[LayerReport, ...]]:
        """``create``, off the event loop: a kept group with the same limits if there is
        one (no ``mkdir``), else one made in a worker thread (shielded: a launch cancelled
        meanwhile still gets the group, and removes it)."""
        spares = self._spares.get(cgroup_limits(policy)[0]) if parent is None else None
        spare = spares.pop() if spares else None
        if spare is not None or self.backend is None:
            return self.create(session_id, policy, parent, spare=spare)
        with trio.CancelScope(shield=True):
            made = await trio.to_thread.run_sync(self.create, session_id, policy, parent)
        return made

    def create(self, session_id: str, policy: ResolvedPolicy,
               parent: SessionGroup | None = None, *, spare: SessionGroup | None = None
               ) -> tuple[SessionGroup | None, tuple[LayerReport, ...]]:
        """The session's group and its ``limits`` layer; EnforcementUnavailable when a limit
        it asked for cannot be applied and the profile does not accept that. ``parent``: the
        agent's group, for a tool session (nested in it where the backend can). ``spare``:
        a kept group with the same limits, used instead of making one (blocking otherwise:
        directories made in the cgroup hierarchies)."""
        wanted, required = cgroup_limits(policy)
        if self.backend is None:
            if required:
                return None, (_refuse_or(policy, LayerReport(
                    name="limits", state="unavailable", reason=self.why)),)
            return None, (LayerReport(name="limits", state="off",
                                      reason=f"{self.why}; no accounting, processes capped by "
                                      "RLIMIT_NPROC only"),)
        group = spare or self.backend.create(session_id, wanted, parent)
        gaps = [m for m in group.missing if m.limit in required]
        detail = f"{_describe(wanted)}; {self.backend.describe()} {group.path}"
        if parent is not None:
            nested = group.path.startswith(parent.path.rstrip("/") + "/")
            detail += ("; inside its agent's group, whose limits bound both" if nested else
                       "; beside its agent's group (cgroup v2: not nested)")
        layers: tuple[LayerReport, ...] = ()
        if wanted.pids is not None and all(m.limit != "pids" for m in group.missing):
            # The cap holds for root too, unlike RLIMIT_NPROC: say so in its own layer.
            layers = (LayerReport(
                name="processes", state="applied",
                detail=f"at most {policy.max_processes} processes and threads (pids cgroup)"),)
        if gaps:
            reason = "; ".join(f"{m.limit}: {m.reason}" for m in gaps)
            try:
                return group, (_refuse_or(policy, LayerReport(
                    name="limits", state="partial", reason=reason, detail=detail)), *layers)
            except EnforcementUnavailable:
                if spare is not None:
                    self._spares[wanted].append(spare)  # refused by this profile, not another
                else:
                    group.remove()
                raise
        return group, (LayerReport(name="limits", state="applied", detail=detail), *layers)

    def pool(self) -> tuple[tuple[str, str], ...]:
        """Where the fork server may keep warm launchers in groups of their own (v1 only:
        moving a process into a v1 group costs an RCU grace period per hierarchy, which a
        launcher born in its group never pays on the launch path)."""
        return self.backend.pool() if self.backend is not None else ()

    def adopt(self, name: str, made: SessionGroup, layers: tuple[LayerReport, ...],
              limits: CgroupLimits) -> tuple[SessionGroup, tuple[LayerReport, ...]]:
        """The warm launcher's group ``name`` as the session's, and ``layers`` naming it.
        ``made`` (with ``limits`` written, never joined) is kept for a later launch (one that
        ``make`` took from the kept ones keeps its name: no renames on the event loop), or,
        when enough are kept, removed with the session's group at its end."""
        if self.backend is None:
            raise ValueError("no cgroup backend: no launcher waits in a group")
        spares = self._spares.get(limits)
        if spares is None and len(self._spares) < SPARE_LIMITS_KEPT:
            spares = self._spares[limits] = []
        kept: SessionGroup | None = None
        if spares is not None and len(spares) < SPARES_PER_LIMITS:
            if os.path.basename(made.path).startswith(SPARE_PREFIX):
                kept = made  # a kept group already (``make``), still unjoined: kept as it is
            else:
                try:  # named for what it is now (v1: a rename of each of its few directories)
                    kept = self.backend.spare(made, f"{SPARE_PREFIX}{secrets.token_hex(4)}")
                except OSError as exc:
                    log.warning("an unused session cgroup cannot be kept", path=made.path,
                                error=exc.strerror or str(exc))
        group = self.backend.adopt(name, made, keep_made=kept is not None)
        if kept is not None and spares is not None:
            spares.append(kept)
        return group, tuple(msgspec.structs.replace(
            layer, detail=layer.detail.replace(made.path, group.path)) for layer in layers)

    def close(self) -> None:
        """At daemon exit: end the warm launchers waiting in groups of their own, remove
        what is left of the subtrees (kept spares too), clear those of daemons that died
        meanwhile, and let ours go (blocking, bounded)."""
        self._spares.clear()
        if self.backend is None:
            return
        self.backend.remove_stale()
        for sub in self.backend.subtrees():
            try:
                os.rmdir(sub)
            except OSError:
                pass
        self._sweep()  # those of daemons killed meanwhile
        _sweep.release(self._held)


def with_layers(report: EnforcementReport, layers: tuple[LayerReport, ...]
                ) -> EnforcementReport:
    """``report`` with ``layers`` in place of the ones of the same name (or added)."""
    names = {layer.name for layer in layers}
    kept = tuple(layer for layer in report.layers if layer.name not in names)
    return msgspec.structs.replace(report, layers=(*kept, *layers))


def end_reason(stopped: p.EndReason, usage: Usage | None, exit_code: int | None
               ) -> p.EndReason:
    """Why the session ended: a stop request's reason, else what its cgroup saw (an OOM kill;
    a failure after forks were refused at the pid cap), else ``exited``."""
    if stopped not in ("", "oom"):
        return stopped
    if usage is not None and usage.oom_kills:
        return "oom"
    if not stopped and usage is not None and usage.pids_limit_hits and exit_code != 0:
        return "pids_limit"
    return stopped or "exited"


async def remove_group(group: SessionGroup) -> None:
    """The group gone (what is left in it killed), in a worker thread: removing a v1 group
    takes milliseconds, which the event loop must not wait for. The launcher's outer process
    leaves it just after the init: wait for that, bounded. (Its final usage is the caller's
    to read first, as the registry does at a session's end.)"""
    # The first try only removes what is empty: the outer process usually leaves within
    # milliseconds of the reply (measured 4-12 ms under load), and listing the groups to kill
    # it (``kill_all``) costs more than the next try. From the next try on, what is left is
    # killed, as before.
    kill = False
    with trio.move_on_after(REMOVE_TIMEOUT):
        while not await trio.to_thread.run_sync(functools.partial(group.remove, kill=kill)):
            kill = True
            await trio.sleep(0.02)
        return
    log.warning("a session's cgroup could not be removed; the next daemon start removes it",
                path=group.path)
