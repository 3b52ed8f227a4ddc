"""The result of a learn run, and the ways to show it: nono's learn JSON, a complete profile,
a readable summary, and the difference from a base profile."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from .._text import printable
from ..errors import PolicyError
from ..policy import Access, Grant, ResolvedPolicy
from ..proxy import ProxyRequest, decide, proxy_policy
from ._fold import Covered, DeniedTouch, ProposedGrant, Skipped
from ._network import DirectAddress, OutboundHost, RefusedTarget

_DEFAULT_PORTS: Final = (80, 443)
_DIR_KEYS: Final = {Access.READWRITE: "allow", Access.READ: "read", Access.WRITE: "write"}
_FILE_KEYS: Final = {Access.READWRITE: "allow_file", Access.READ: "read_file",
                     Access.WRITE: "write_file"}
_KEY_ORDER: Final = ("allow", "read", "write", "allow_file", "read_file", "write_file")
_ENCODER: Final = msgspec.json.Encoder()


class ListeningPort(msgspec.Struct, frozen=True, kw_only=True):
    """A port the program listened on (``source="traced"``: seen in bind/listen) or one the
    caller forwarded while learning (``source="requested"``)."""

    address: str
    port: int
    count: int
    source: str = "traced"


class LearnProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot for the live progress line: what has been seen so far."""

    elapsed: float
    remaining: float | None
    paths: int
    hosts: int
    listening: int

    def line(self) -> str:
        text = (f"learning: {self.paths} paths, {self.hosts} host"
                f"{'' if self.hosts == 1 else 's'}")
        if self.listening:
            text += f", {self.listening} listening port{'' if self.listening == 1 else 's'}"
        if self.remaining is not None:
            text += f", {max(0, round(self.remaining))} s left"
        else:
            text += f", {round(self.elapsed)} s"
        return text


class LearnResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a learn run proposes, and what it saw that it does not propose.

    ``grants`` are the filesystem entries to write into a profile; ``workdir_access`` and
    ``groups`` the rest of the filesystem part; ``outbound`` and ``listening`` the network
    part. ``covered`` lists what needed no entry (``covered_by`` a group, ``workdir`` or
    ``sandbox``); ``denied_touched`` the denied paths the program tried; ``skipped`` what is
    left out and why; ``addresses`` and ``refused`` the network requests without a usable
    name. ``base`` names the profile the result was reduced against (see
    :meth:`diff_against`).
    """

    command: tuple[str, ...]
    workdir: str
    home: str
    workdir_access: Access | None
    groups: tuple[str, ...]
    grants: tuple[ProposedGrant, ...]
    outbound: tuple[OutboundHost, ...]
    listening: tuple[ListeningPort, ...]
    covered: tuple[Covered, ...] = ()
    denied_touched: tuple[DeniedTouch, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    addresses: tuple[DirectAddress, ...] = ()
    refused: tuple[RefusedTarget, ...] = ()
    exit_code: int | None = None
    exit_signal: int | None = None
    timed_out: bool = False
    stopped: bool = False  # ended early on request (``learn(stop=...)``)
    duration: float = 0.0
    notes: tuple[str, ...] = ()
    base: str | None = None

    # -- views -------------------------------------------------------------------------------

    def filesystem(self) -> dict[str, list[str]]:
        """The proposed grants under nono's keys (absolute paths)."""
        out: dict[str, list[str]] = {key: [] for key in _KEY_ORDER}
        for grant in self.grants:
            keys = _FILE_KEYS if grant.is_file else _DIR_KEYS
            out[keys[grant.access]].append(grant.path)
        return out

    def to_nono_json(self, *, include_covered: bool = False) -> bytes:
        """nono's ``learn --json`` shape, plus nonod's own findings under ``"nonod"``."""
        nonod: dict[str, object] = {
            "workdir": self.workdir,
            "workdir_access": self.workdir_access.value if self.workdir_access else "none",
            "groups": list(self.groups),
            "denied_touched": [msgspec.to_builtins(d) for d in self.denied_touched],
            "skipped": [msgspec.to_builtins(s) for s in self.skipped],
            "addresses": [msgspec.to_builtins(a) for a in self.addresses],
            "refused": [msgspec.to_builtins(r) for r in self.refused],
            "timed_out": self.timed_out,
            "stopped": self.stopped,
        }
        if include_covered:
            nonod["covered"] = [msgspec.to_builtins(c) for c in self.covered]
        if self.base is not None:
            nonod["base"] = self.base
        doc = {
            "filesystem": self.filesystem(),
            "network": {
                "outbound": [{"hostname": h.hostname, "port": h.port, "count": h.count}
                             for h in self.outbound],
                "listening": [{"addr": p.address, "port": p.port, "count": p.count}
                              for p in self.listening],
            },
            "nonod": nonod,
        }
        return msgspec.json.format(_ENCODER.encode(doc), indent=2) + b"\n"

    def to_profile(self, name: str, *, extends: str | None = None) -> bytes:
        """A complete profile in nono's format that grants what was proposed.

        Paths under ``$HOME`` are written as ``$HOME/...``. Without outbound hosts the
        network is ``block: true`` (a profile without a network section would leave it
        unrestricted). ``extends`` names a base profile the proposal adds to.
        """
        fs: dict[str, list[str]] = {}
        for key, paths in self.filesystem().items():
            if paths:
                fs[key] = [self._portable(p) for p in paths]
        network: dict[str, object] = {}
        hosts = sorted({h.hostname for h in self.outbound})
        if hosts:
            network["allow_domain"] = hosts
            extra = sorted({h.port for h in self.outbound} - set(_DEFAULT_PORTS))
            if extra:
                network["open_port"] = extra
        elif self.base is None:
            network["block"] = True
        ports = sorted({p.port for p in self.listening})
        if ports:
            network["listen_port"] = ports
        command = " ".join(self.command)
        doc: dict[str, object] = {
            "meta": {"name": name, "version": "1.0.0",
                     "description": f"Proposed by nonoctl learn from: {command}"[:500]},
        }
        if extends is not None:
            doc["extends"] = extends
        doc["workdir"] = {"access": self.workdir_access.value if self.workdir_access
                          else "none"}
        if self.groups:
            doc["groups"] = {"include": list(self.groups)}
        if fs:
            doc["filesystem"] = fs
        if network:
            doc["network"] = network
        return msgspec.json.format(_ENCODER.encode(doc), indent=2) + b"\n"

    def _portable(self, path: str) -> str:
        home = self.home.rstrip("/")
        if home and home != "/" and path.startswith(home + "/"):
            return "$HOME" + path[len(home):]
        return path

    def summary_lines(self, *, include_covered: bool = False) -> list[str]:
        """A readable account of the run and the proposal, one line per item."""
        lines: list[str] = []
        head = f"learned: {' '.join(self.command)}"
        if self.timed_out:
            head += f" (stopped at the time limit after {self.duration:.1f} s)"
        elif self.stopped:
            head += f" (stopped on request after {self.duration:.1f} s)"
        elif self.exit_signal is not None:
            head += f" (killed by signal {self.exit_signal} after {self.duration:.1f} s)"
        elif self.exit_code is not None:
            head += f" (exit {self.exit_code} after {self.duration:.1f} s)"
        lines.append(head)
        if self.base is not None:
            lines.append(f"listing only what profile `{self.base}` does not already allow")
        lines.append("")
        lines.append("filesystem:")
        if self.workdir_access is not None:
            lines.append(f"  workdir   {self.workdir} ({self.workdir_access.value})")
        if self.groups:
            lines.append(f"  groups    {', '.join(self.groups)}")
        width = max((len(_label(g)) for g in self.grants), default=0)
        for grant in self.grants:
            lines.append(f"  {_label(grant).ljust(width)}  {grant.path}  ({grant.why})")
        if not self.grants and self.workdir_access is None and not self.groups:
            lines.append("  nothing beyond the built-in groups")
        lines.append("")
        lines.append("network:")
        for host in self.outbound:
            times = "time" if host.count == 1 else "times"
            lines.append(f"  {host.hostname}:{host.port}  ({host.count} {times})")
        # What the profile will say is wider than the pairs seen: ports are not per host.
        for extra in sorted({h.port for h in self.outbound} - set(_DEFAULT_PORTS)):
            asked = ", ".join(sorted({h.hostname for h in self.outbound if h.port == extra}))
            lines.append(f"  open_port {extra}  (for every host the profile allows, not only "
                         f"{asked}; and each host above on 80 and 443 too)")
        for port in self.listening:
            how = "listened on" if port.source == "traced" else "forwarded"
            lines.append(f"  listen_port {port.port}  ({how}, {port.address})")
        if not self.outbound and not self.listening:
            lines.append("  no network use seen: the profile blocks the network")
        for addr in self.addresses:
            why = ("asked the proxy for an address, not a name" if addr.via == "proxy"
                   else "connected directly, bypassing the proxy (refused)")
            lines.append(f"  not proposed: {addr.address}:{addr.port}  ({why}, "
                         f"{addr.count}x)")
        for target in self.refused:
            lines.append(f"  refused: {target.host}:{target.port}  ({target.reason}, "
                         f"{target.count}x)")
        if self.denied_touched:
            lines.append("")
            lines.append("denied paths the program touched (not added):")
            for touch in self.denied_touched:
                by = touch.denied_by.removeprefix("group:")
                lines.append(f"  {touch.path}  ({by}: {', '.join(touch.uses)})")
        if self.skipped:
            lines.append("")
            lines.append("left out:")
            for skip in self.skipped:
                lines.append(f"  {skip.path}  ({skip.reason})")
        if include_covered and self.covered:
            lines.append("")
            lines.append("already covered:")
            for item in self.covered:
                lines.append(f"  {item.path}  ({item.access.value}, covered_by "
                             f"{item.covered_by})")
        for note in self.notes:
            lines.append(f"note: {note}")
        # Paths and targets are the program's to name: a line break or carriage return in one
        # would draw lines of the summary that no entry of the proposal matches.
        return [printable(line) for line in lines]

    # -- reduction against a base ------------------------------------------------------------

    def diff_against(self, base: ResolvedPolicy) -> LearnResult:
        """Only what ``base`` (resolved for the same user and working directory) lacks:
        grants it does not cover, groups it does not include, hosts its proxy would refuse,
        ports it does not forward, and working-directory access beyond its own."""
        grants = tuple(g for g in self.grants
                       if not any(_grant_covers(b, g) for b in base.grants))
        groups = tuple(g for g in self.groups if g not in base.groups)
        workdir_access = self.workdir_access
        if workdir_access is not None and base.workdir_access is not None and \
                _within(workdir_access, base.workdir_access):
            workdir_access = None
        outbound = tuple(h for h in self.outbound if not _host_allowed(base, h))
        listening = tuple(p for p in self.listening
                          if p.port not in base.network.listen_ports)
        return msgspec.structs.replace(
            self, grants=grants, groups=groups, workdir_access=workdir_access,
            outbound=outbound, listening=listening, base=base.name)


def _label(grant: ProposedGrant) -> str:
    keys = _FILE_KEYS if grant.is_file else _DIR_KEYS
    return keys[grant.access]


def _within(need: Access, have: Access) -> bool:
    return (not need.reads or have.reads) and (not need.writes or have.writes)


def _grant_covers(have: Grant, want: ProposedGrant) -> bool:
    if have.is_file and (not want.is_file or have.path != want.path):
        return False
    inside = want.path == have.path or have.path == "/" or want.path.startswith(
        have.path.rstrip("/") + "/")
    return inside and _within(want.access, have.access)


def _host_allowed(base: ResolvedPolicy, host: OutboundHost) -> bool:
    network = base.network
    if network.block:
        return False
    if not network.restricted:
        return True  # an unrestricted network already reaches every host
    try:
        policy = proxy_policy(network)
    except PolicyError:
        return False
    return decide(ProxyRequest(mode="connect", host=host.hostname, port=host.port),
                  policy).allowed


def listening_ports(traced: dict[tuple[str, int], int], requested: Sequence[int]
                    ) -> tuple[ListeningPort, ...]:
    """The listening ports of a run: traced binds first, then requested ports not seen."""
    out = [ListeningPort(address=address, port=port, count=count)
           for (address, port), count in sorted(traced.items(), key=lambda i: i[0][1])]
    seen = {p.port for p in out}
    for port in sorted(set(requested)):
        if port not in seen:
            out.append(ListeningPort(address="127.0.0.1", port=port, count=0,
                                     source="requested"))
    return tuple(out)

