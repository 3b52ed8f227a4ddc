"""Shared pieces for the audit tests: a fixed clock, a typical session's events, a writer."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

from nonod.audit import (
    CredentialInjected,
    Enforcement,
    Event,
    FsDenied,
    Layer,
    Network,
    Seal,
    SessionEnded,
    SessionStarted,
    SignalSent,
    Signer,
    TrustVerified,
)
from nonod.audit._writer import AuditWriter, Ledger

SESSION = "3f9a1c2e"
DIGEST = "ab" * 32


def fixed_clock(start_second: int = 0) -> Callable[[], str]:
    """Timestamps one millisecond apart, from 2025-06-01 12:00:<start>."""
    counter = itertools.count(start_second * 1000)

    def clock() -> str:
        ms = next(counter)
        return f"2025-06-01T12:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}000Z"

    return clock


def session_events(session: str = SESSION) -> list[Event]:
    """The events of the issue's example: one allowed host, one refused, a denied read,
    exit 3."""
    return [
        SessionStarted(session=session, argv=("python3", "bot.py"), cwd="/srv/bot", uid=1000,
                       policy_digest=DIGEST, profile="gitbot", profile_digest=DIGEST),
        Enforcement(fully_enforced=True, landlock_abi=6,
                    layers=(Layer(name="filesystem", state="applied"),
                            Layer(name="network", state="applied"))),
        TrustVerified(path="/srv/bot/GEMINI.md", sha256=DIGEST, signer="keyid:1234"),
        Network(mode="reverse", decision="allow", host="api.github.com", port=443,
                method="GET", path="/repos/o/r/issues", status=200, bytes_in=5120,
                bytes_out=310, duration_ms=84.5, route="github", auth="ok"),
        CredentialInjected(route="github", credential="github_token", source="keychain",
                           into="Authorization"),
        Network(mode="connect", decision="deny", host="evil.com", port=443,
                reason="host not in allowlist"),
        FsDenied(path="/home/bot/.ssh/id_ed25519", operation="read", pid=42, errno="EACCES",
                 mechanism="seccomp_notify"),
        SignalSent(signal=15, name="SIGTERM", reason="stop"),
        SessionEnded(reason="exited", exit_code=3, duration_ms=1520.0),
    ]


async def write_session(
    state_dir: Path,
    events: Sequence[Event] | None = None,
    *,
    session: str = SESSION,
    ledger: Ledger | None = None,
    signer: Signer | None = None,
    seal: bool = True,
) -> Path:
    """Write ``events`` as a session's file (sealed unless told not to); return its path."""
    writer = await AuditWriter.create(state_dir, session, ledger=ledger, signer=signer,
                                      clock=fixed_clock())
    for event in session_events(session) if events is None else events:
        writer.append(event)
    if seal:
        result = await writer.seal()
        assert isinstance(result, Seal)
    else:
        await writer.aclose()
    return writer.path
