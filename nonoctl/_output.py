"""Everything nonoctl writes to the terminal goes through here (and only here).

Human output by default: aligned tables, relative times, one-line errors with a hint. With
``--json``: machine-readable JSON (an array or object per command, or JSON lines for streams)
on stdout, errors still on stderr. Human output never carries a control character or escape
sequence that a session chose (``._sanitize``): values are escaped here, at the one place
that writes them.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO, final

import msgspec

from nonod import protocol as p

from ._sanitize import OutputFilter, field, text
from ._table import ago as _ago
from ._table import command as _command
from ._table import sessions_table, table
from ._table import signame as _signame
from ._table import status as _status

if TYPE_CHECKING:
    from nonod.audit import Record

_encoder: Final = msgspec.json.Encoder()


@functools.cache
def _record_decoder() -> msgspec.json.Decoder[Record]:
    from nonod.audit import Record

    return msgspec.json.Decoder(Record)


def _age(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "-"
    return _ago(int((now - when).total_seconds()))


def _bytes(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def _limits(limits: p.Limits) -> str:
    from nonod._units import describe_limits

    return describe_limits(**msgspec.structs.asdict(limits)) or "none asked for"


def _usage(u: p.Usage) -> str:
    text = (f"CPU {u.cpu_ns / 1e9:.2f}s, memory {_bytes(u.memory_bytes)} (peak "
            f"{_bytes(u.memory_peak_bytes)}), {u.pids} pids (peak {u.pids_peak}), I/O read "
            f"{_bytes(u.io_read_bytes)} written {_bytes(u.io_write_bytes)}")
    if u.oom_kills:
        text += f", {u.oom_kills} OOM kills"
    if u.pids_limit_hits:
        text += f", {u.pids_limit_hits} forks refused at the pid cap"
    return text


def _top_row(info: p.SessionInfo, share: float | None) -> tuple[str, ...]:
    u = info.usage or p.Usage()
    return (info.id, info.name, "-" if share is None else f"{share:.1f}",
            f"{u.cpu_ns / 1e9:.2f}s", _bytes(u.memory_bytes), _bytes(u.memory_peak_bytes),
            str(u.pids), f"{_bytes(u.io_read_bytes)}/{_bytes(u.io_write_bytes)}",
            _command(info.argv, 30))


def _whole_or_not(info: p.SessionInfo) -> str:
    """``inspect``'s command: the session's argv as the daemon keeps it, and whether that is
    a prefix of the one it ran (the audit file has that one whole)."""
    text = " ".join(info.argv)
    cut = info.argv_shortened
    if cut is None:
        return text
    return (f"{text} ... (shortened: {cut.arguments} arguments, {cut.bytes} bytes in all; "
            f"`nonoctl audit show {info.id}` has them whole)")




@final
class Output:
    def __init__(
        self, *, json: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.json_mode = json
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr

    # -- primitives
    def line(self, line: str = "") -> None:
        self._out.write(text(line) + "\n")

    def rendered(self, line: str) -> None:
        """A line that is already safe for the terminal and carries our own colours (an
        audit record from :func:`nonod.audit.render_record`, which escapes every value)."""
        self._out.write(line + "\n")

    def note(self, remark: str) -> None:
        """A human remark on stderr (never mixed into data on stdout)."""
        self._err.write(text(remark) + "\n")
        self._err.flush()

    def error(self, message: str, hint: str | None = None) -> None:
        self._err.write(f"nonoctl: {text(message)}\n")
        if hint:
            self._err.write(f"  hint: {text(hint)}\n")
        self._err.flush()

    def json(self, value: Any) -> None:
        self._out.write(_encoder.encode(value).decode("utf-8") + "\n")
        self._out.flush()

    def pretty_json(self, raw: bytes) -> None:
        self._out.write(msgspec.json.format(raw, indent=2).decode("utf-8") + "\n")

    def raw(self, data: bytes) -> None:
        buffer = self._out.buffer
        buffer.write(data)
        buffer.flush()

    def flush(self) -> None:
        self._out.flush()

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        """Columns aligned, every cell escaped as ``field`` does (``_table.table``)."""
        self._out.write(table(headers, rows))

    # -- sessions
    def sessions(self, infos: Sequence[p.SessionInfo]) -> None:
        if self.json_mode:
            self.json(infos)
            return
        self._out.write(sessions_table(infos, dt.datetime.now(dt.UTC).timestamp()))

    def session(self, d: p.SessionDetail) -> None:
        if self.json_mode:
            self.json(d)
            return
        now = dt.datetime.now(dt.UTC)
        rows = [
            ("id", d.id), ("name", d.name), ("state", _status(d)),
            ("pid", str(d.pid) if d.pid else "-"), ("profile", d.profile or "(none)"),
            ("command", _whole_or_not(d)), ("cwd", d.cwd), ("uid/gid", f"{d.uid}/{d.gid}"),
            ("started", f"{d.started_at.isoformat()} ({_age(d.started_at, now)})"),
        ]
        if d.parent is not None:
            rows.insert(1, ("parent", f"{d.parent} (runs a tool for it)"))
        if d.ended_at is not None:
            rows.append(("ended", f"{d.ended_at.isoformat()} ({_age(d.ended_at, now)})"))
            rows.append(("reason", d.reason or "exited"))
        rows += [
            ("mode", ("detached" if d.detached else "attached") + (", tty" if d.tty else "")),
            ("attached client", "yes" if d.attached else "no"),
            ("policy digest", d.policy_digest or "-"),
        ]
        if d.log_path:
            rows.append(("output log", f"{d.log_path} ({d.output_bytes} bytes this run)"))
        if d.intercepts:
            rows.append(("tls intercept", ", ".join(d.intercepts)))
        if d.secret_env:
            rows.append(("secrets in env", ", ".join(d.secret_env) + " (env_credentials)"))
        for line in d.weakened:
            rows.append(("turned off", line))
        for line in d.secrets_bound:
            rows.append(("secret bound", line))
        if d.limits is not None:
            rows.append(("limits", _limits(d.limits)))
        if d.usage is not None:
            rows.append(("usage", _usage(d.usage)))
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            self.line(f"{key.ljust(width)}  {field(value)}")
        enforcement = d.enforcement
        if enforcement is None:
            return
        head = "fully enforced" if enforcement.fully_enforced else "PARTIALLY ENFORCED"
        self.line(f"{'enforcement'.ljust(width)}  {head} (landlock ABI {enforcement.landlock_abi})")
        for layer in enforcement.layers:
            extra = f": {layer.reason}" if layer.reason else ""
            detail = f" [{layer.detail}]" if layer.detail else ""
            self.line(f"{''.ljust(width)}  - {layer.name}: {layer.state}{extra}{detail}")

    def top(self, rows: Sequence[tuple[p.SessionInfo, float | None]]) -> None:
        """One frame of ``top``: each session's usage and its CPU share since the last."""
        if self.json_mode:
            self.json([{"session": info, "cpu_percent": share} for info, share in rows])
            return
        self.table(
            ("ID", "NAME", "CPU%", "CPU TIME", "MEM", "PEAK", "PIDS", "IO R/W", "COMMAND"),
            (_top_row(info, share) for info, share in rows),
        )

    def launched(self, d: p.SessionDetail) -> None:
        if self.json_mode:
            self.json(d)
            return
        self.line(d.id)

    def enforcement_warning(self, d: p.SessionDetail) -> None:
        if d.enforcement is not None and not d.enforcement.fully_enforced:
            self.note(f"nonoctl: warning: session {d.id} is {d.enforcement.summary}")
        if d.secret_env:
            self.note(f"nonoctl: note: session {d.id} holds real secrets in its environment "
                      f"(env_credentials): {', '.join(d.secret_env)}")
        if d.weakened:
            self.note(f"nonoctl: note: session {d.id} runs with protections turned off by its "
                      f"profile or command line: {'; '.join(d.weakened)}")
        for line in d.secrets_bound:
            self.note(f"nonoctl: note: secret {line} (its first route): a profile that sends "
                      "it to another host is refused (`nonoctl secret hosts NAME` lists them)")

    def exited(self, e: p.Exited) -> None:
        if self.json_mode:
            self.json(e)
            return
        if e.signal is not None:
            self.line(f"{e.session}: killed by {_signame(e.signal)} ({e.reason})")
        else:
            self.line(f"{e.session}: exited with {e.exit_code} ({e.reason})")

    def dry_run(self, d: p.DryRun) -> None:
        if d.summary is not None and d.summary.network == "unrestricted":
            self.note("nonoctl: warning: the network is UNRESTRICTED for this launch: "
                      "the program can reach any host")
        if self.json_mode:
            self.json(d)
            return
        if d.summary is not None:
            self._dry_run_summary(d.summary)
        self.line(f"command: {field(' '.join(d.argv)) or '(none: give one after `--` to launch)'}")
        self.line(f"cwd:     {d.cwd}")
        self.line(f"uid/gid: {d.uid}/{d.gid}")
        self.line("policy:")
        self.pretty_json(d.policy)

    def _dry_run_summary(self, s: p.DryRunSummary, most: int = 8) -> None:
        """The headline facts, first: the paths asked for, the network, the credentials."""
        self.line("dry run: nothing was started")
        self.line(f"filesystem:  {s.grants} grants ({len(s.main_paths)} asked for, "
                  f"{s.group_grants} from policy groups), {s.denials} denied paths")
        for path, access in s.main_paths[:most]:
            self.line(f"             {access:<9}  {path}")
        if len(s.main_paths) > most:
            self.line(f"             ... and {len(s.main_paths) - most} more (policy below)")
        hosts = len(s.hosts)
        mode = {"blocked": "blocked",
                "allowlist": f"allowlist of {hosts} host{'s' if hosts != 1 else ''}",
                "unrestricted": "UNRESTRICTED"}[s.network]
        self.line(f"network:     {mode}: {s.network_reason}")
        if s.hosts:
            self.line(f"             {', '.join(s.hosts)}")
        if s.listen_ports:
            self.line(f"listening:   {', '.join(str(port) for port in s.listen_ports)}")
        self.line(f"credentials: {', '.join(s.credentials) or 'none'}")
        for route in s.routes:  # which secret goes where: a profile picks both
            self.line(f"             {field(route)}")
        for index, weakened in enumerate(s.weakened):
            self.line(f"{'weakened:' if index == 0 else '':<12} {field(weakened)}")
        if s.intercepts:
            self.line(f"intercepts:  TLS of {', '.join(s.intercepts)} (the session's own CA)")
        for index, tool in enumerate(s.tools):  # each in a session of its own
            self.line(f"{'tools:' if index == 0 else '':<12} {tool}")
        self.line()

    def status(self, s: p.DaemonStatus) -> None:
        if self.json_mode:
            self.json(s)
            return
        now = dt.datetime.now(dt.UTC)
        rows = [
            ("nonod", f"running (pid {s.pid}, version {s.version}, protocol {s.protocol})"),
            ("mode", "system" if s.system else f"user (uid {s.uid})"),
            ("socket", s.socket), ("state", s.state_dir), ("config", s.config or "(defaults)"),
            ("started", f"{s.started_at.isoformat()} ({_age(s.started_at, now)})"),
            ("sessions", f"{s.sessions_live} live, {s.sessions_total} known"),
            ("launcher", s.launcher),
        ]
        for key, value in rows:
            self.line(f"{key.ljust(9)} {value}")

    def profiles(self, entries: Sequence[p.ProfileEntry]) -> None:
        if self.json_mode:
            self.json(entries)
            return
        self.table(("NAME", "ORIGIN", "PATH"), ((e.name, e.source, e.description) for e in entries))

    def profile_document(self, doc: p.ProfileDocument) -> None:
        if self.json_mode:
            self.raw(bytes(doc.document) + b"\n")
            return
        self.pretty_json(doc.document)

    def profile_valid(self, valid: p.ProfileValid) -> None:
        if self.json_mode:
            self.json(valid)
            return
        self.line(f"ok: {valid.source} (profile {valid.name!r})")
        for note in valid.notes:
            self.line(f"  note: {note}")

    def secrets(self, entries: Sequence[p.SecretEntry]) -> None:
        if self.json_mode:
            self.json(entries)
            return
        self.table(("NAME", "SOURCE"), ((e.name, e.source) for e in entries))

    def secret_done(self, verb: str, reply: p.SecretStored) -> None:
        if self.json_mode:
            self.json(reply)
        else:
            self.line(f"{verb} {reply.name}" + (f" ({reply.source})" if reply.source else ""))

    def secret_hosts(self, bound: p.SecretBound) -> None:
        if self.json_mode:
            self.json(bound)
        elif not bound.hosts:
            self.line(f"{field(bound.reference)}: bound to no upstream (its next route binds it)")
        else:
            self.line(f"{field(bound.reference)}: {', '.join(field(h) for h in bound.hosts)}")

    def secret_state(self, state: p.SecretState) -> None:
        if self.json_mode:
            self.json(state)
        else:
            self.line(f"{state.name}: {'found' if state.found else 'not found'}"
                      + (f" ({state.source})" if state.source else ""))

    # -- audit streams
    def audit_record(self, session: str, raw: bytes, *, as_json: bool, wrap: bool) -> None:
        """One audit record: the stored line as it is (``wrap``: inside
        ``{"record": ..., "session": ...}``), or one rendered line, coloured on a terminal."""
        if as_json:
            line = raw.decode("utf-8")
            if wrap:
                line = f'{{"record":{line},"session":{_encoder.encode(session).decode()}}}'
            self._out.write(line + "\n")
            self._out.flush()
            return
        from nonod.audit import render_record

        record = _record_decoder().decode(raw)
        self.rendered(render_record(session, record, color=self._out.isatty()))
        self._out.flush()

    def audit_dropped(self, dropped: p.AuditDropped) -> None:
        from nonod.audit import render_dropped

        self._err.write(render_dropped(dropped.buffer, dropped.delivered,
                                       color=self._err.isatty()) + "\n")
        self._err.flush()

    def output_chunk(self, session: str, chunk: p.Output, safe: OutputFilter | None) -> None:
        """A chunk of a program's output: as JSON, through ``safe`` (escape sequences shown,
        not obeyed) or, with no filter, as the bytes the program wrote."""
        if self.json_mode:
            self.json({"session": session, "offset": chunk.offset,
                       "data": chunk.data.decode("utf-8", "replace")})
            return
        self.raw(chunk.data if safe is None else safe.feed(chunk.data))
