"""Human-readable audit lines: ``time  session  kind  summary``, optionally coloured.

Everything shown that came from a session (paths, hosts, argv, reasons) is passed through
:func:`printable` first: a sandboxed program chooses the names it opens and connects to, and
must not be able to drive the operator's terminal with escape sequences through them.

Colour is the caller's choice (``nonoctl`` enables it on a TTY); nothing here looks at a
terminal. This module imports no trio.
"""

from __future__ import annotations

import shlex
import signal as _signal
from typing import Final, assert_never

from .._text import printable
from ._events import (
    Approval,
    CredentialInjected,
    DaemonEvent,
    Enforcement,
    Entry,
    FsDenied,
    Network,
    Record,
    Seal,
    SessionEnded,
    SessionStarted,
    SignalSent,
    ToolEnded,
    ToolRefused,
    ToolStarted,
    TrustFailed,
    TrustVerified,
    ViewGuarded,
    kind_of,
)

_RESET: Final = "\x1b[0m"
_BOLD: Final = "\x1b[1m"
_DIM: Final = "\x1b[2m"
_RED: Final = "\x1b[31m"
_GREEN: Final = "\x1b[32m"
_YELLOW: Final = "\x1b[33m"
_CYAN: Final = "\x1b[36m"
_KIND_WIDTH: Final = 19


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _signame(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def summarize(event: Entry) -> str:
    """One line saying what ``event`` records (not yet escaped; see :func:`render_record`)."""
    match event:
        case SessionStarted():
            parts = [shlex.join(event.argv)]
            if event.profile:
                digest = f" {event.profile_digest[:12]}" if event.profile_digest else ""
                parts.append(f"profile {event.profile}{digest}")
            parts.append(f"policy {event.policy_digest[:12]}")
            parts.append(f"uid {event.uid}")
            parts.append(f"cwd {event.cwd}")
            if event.pid is not None:
                parts.append(f"pid {event.pid}")
            if event.secret_env:
                parts.append(f"secrets in env {','.join(event.secret_env)}")
            if event.weakened:
                parts.append(f"turned off: {'; '.join(event.weakened)}")
            if event.secrets_bound:
                parts.append(f"secrets bound: {'; '.join(event.secrets_bound)}")
            return ", ".join(parts)
        case Enforcement():
            head = "fully enforced" if event.fully_enforced else "PARTIALLY enforced"
            abi = f", landlock v{event.landlock_abi}" if event.landlock_abi else ""
            missing = f"; missing: {'; '.join(event.missing)}" if event.missing else ""
            return head + abi + missing
        case TrustVerified():
            return f"{event.path} sha256:{event.sha256[:12]} signed by {event.signer}"
        case TrustFailed():
            return f"{event.path}: {event.reason}"
        case Network():
            text = f"{event.decision.upper()} {event.mode} {event.host}:{event.port}"
            if event.stage == "open":
                text += " (tunnel open)"
            if event.route:
                text += f" route {event.route}"
            if event.method or event.path:
                text += f" {event.method or ''} {event.path or ''}".rstrip()
            if event.status is not None:
                text += f" -> {event.status}"
            if event.auth is not None and event.auth != "none":
                text += f" auth {event.auth}"
            if event.decision == "allow" and (event.bytes_in or event.bytes_out):
                text += f", {_size(event.bytes_in)} in / {_size(event.bytes_out)} out"
            if event.duration_ms is not None:
                text += f", {_duration(event.duration_ms)}"
            if event.reason:
                text += f": {event.reason}"
            return text
        case CredentialInjected():
            into = f" into {event.into}" if event.into else ""
            return f"{event.credential} ({event.source}) for route {event.route}{into}"
        case FsDenied(lost=lost) if lost:
            return (f"some denials may be missing ({lost}x: the kernel dropped records in a "
                    f"flood of refused calls, or they were not read by the session's end)")
        case FsDenied():
            extra = [x for x in (f"pid {event.pid}" if event.pid is not None else "",
                                 event.errno or "", event.mechanism) if x]
            text = f"{event.operation} {event.path}" + (f" ({', '.join(extra)})"
                                                        if extra else "")
            if event.suppressed:
                text += f"; {event.suppressed} more not recorded (rate limit)"
            return text
        case ViewGuarded(action="restored"):
            return f"{event.what or 'mount'} restored over {event.path} (replaced on the host)"
        case ViewGuarded():
            return f"protection of {event.path} lost ({event.detail}): session ended"
        case Approval(stage="requested"):
            what = f" {event.method} {event.path}" if event.method else ""
            return (f"ASK {event.id} {event.host}:{event.port}{what} -> {event.backend}"
                    f" (pid {event.pid})")
        case Approval():
            saved = f", saved to {event.saved_to}" if event.saved_to else ""
            return (f"{event.decision.upper()} {event.id} {event.host}:{event.port} by "
                    f"{event.decider} after {_duration(event.latency_ms)}{saved}")
        case SignalSent():
            name = event.name or _signame(event.signal)
            why = f" ({event.reason})" if event.reason else ""
            return f"{name} from {event.sender}{why}"
        case SessionEnded():
            if event.exit_code is not None:
                how = f"exit code {event.exit_code}"
            elif event.signal is not None:
                how = f"killed by {_signame(event.signal)}"
            else:
                how = "exit status unknown"
            text = f"{event.reason}, {how}"
            if event.duration_ms is not None:
                text += f", after {_duration(event.duration_ms)}"
            if event.usage is not None:
                u = event.usage
                text += (f", cpu {_duration(u.user_cpu_ms)} user / "
                         f"{_duration(u.system_cpu_ms)} sys, rss {_size(u.max_rss_kib * 1024)}")
            if event.detail:
                text += f" ({event.detail})"
            return text
        case DaemonEvent():
            version = f" {event.version}" if event.version else ""
            detail = f": {event.detail}" if event.detail else ""
            return f"daemon {event.action} (pid {event.pid}{version}){detail}"
        case ToolStarted():
            return f"tool {event.tool} runs in session {event.child}: {' '.join(event.argv)}"
        case ToolEnded():
            how = (f"killed by {_signame(event.signal)}" if event.signal is not None
                   else f"exit code {event.exit_code}")
            return f"tool {event.tool} (session {event.child}) ended, {how}"
        case ToolRefused():
            rule = f" ({event.rule})" if event.rule else ""
            return f"tool {event.tool} REFUSED{rule}: {event.reason}"
        case Seal():
            return (f"sealed: {event.count} events, head {event.head[:12]}, "
                    f"merkle root {event.merkle_root[:12]}")
        case _:
            assert_never(event)


def _colour(event: Entry) -> str:
    match event:
        case TrustFailed(code="warning"):  # a decision noted (no policy, skipped), no refusal
            return _YELLOW
        case (Network(decision="deny") | TrustFailed() | FsDenied() | ViewGuarded()
              | Approval(decision="deny" | "timeout")):
            return _RED
        case Network():
            return _GREEN
        case Enforcement(fully_enforced=False) | SignalSent() | DaemonEvent():
            return _YELLOW
        case SessionStarted() | SessionEnded() | Enforcement():
            return _CYAN
        case _:
            return _DIM


def render_record(session: str, record: Record, *, color: bool = False,
                  with_date: bool = False) -> str:
    """``12:00:01.123 3f9a1c2e network             ALLOW connect api.github.com:443 ...``

    The time is the record's UTC time (``with_date`` adds the date).
    """
    ts = record.ts
    stamp = ts[:10] + " " + ts[11:23] if with_date else ts[11:23]
    kind = kind_of(record.event)
    summary = printable(summarize(record.event))
    sid = printable(session)
    if not color:
        return f"{stamp} {sid} {kind:<{_KIND_WIDTH}} {summary}"
    tint = _colour(record.event)
    return (f"{_DIM}{stamp}{_RESET} {_BOLD}{sid}{_RESET} "
            f"{tint}{kind:<{_KIND_WIDTH}}{_RESET} {tint}{summary}{_RESET}")


def render_dropped(buffer: int, delivered: int, *, color: bool = False) -> str:
    """The notice shown when a live stream was dropped for falling behind."""
    text = (f"-- stream dropped: fell {buffer} records behind after {delivered}; "
            "the full record is in the session's audit file --")
    return f"{_YELLOW}{text}{_RESET}" if color else text
