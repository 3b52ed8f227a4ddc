"""Human rendering: one line per record, colour only when asked, no terminal injection."""

from __future__ import annotations

from nonod.audit import (
    FsDenied,
    Network,
    Record,
    Seal,
    SessionEnded,
    printable,
    render_dropped,
    render_record,
    summarize,
)

from ._support import SESSION, session_events


def _record(event: object, seq: int = 1) -> Record:
    return Record(seq=seq, ts="2025-06-01T12:00:01.123456Z", prev="00" * 32, hash="11" * 32,
                  event=event)  # type: ignore[arg-type]


def test_every_kind_renders_on_one_line() -> None:
    events = [*session_events(),
              Seal(session=SESSION, count=9, head="ab" * 32, merkle_root="cd" * 32)]
    for event in events:
        line = render_record(SESSION, _record(event))
        assert "\n" not in line and "\x1b" not in line
        assert line.startswith(f"12:00:01.123 {SESSION} ")
        assert summarize(event)


def test_summaries_say_what_happened() -> None:
    events = session_events()
    assert render_record(SESSION, _record(events[3])).endswith(
        "ALLOW reverse api.github.com:443 route github GET /repos/o/r/issues -> 200 auth ok, "
        "5.0 KiB in / 310 B out, 84 ms")
    assert render_record(SESSION, _record(events[5])).endswith(
        "DENY connect evil.com:443: host not in allowlist")
    assert "read /home/bot/.ssh/id_ed25519 (pid 42, EACCES, seccomp_notify)" in \
        render_record(SESSION, _record(events[6]))
    assert "exited, exit code 3, after 1.5 s" in render_record(SESSION, _record(events[8]))
    assert "daemon_lost, exit status unknown" in summarize(SessionEnded(reason="daemon_lost"))
    assert "killed by SIGKILL" in summarize(SessionEnded(reason="killed", signal=9))
    assert render_record(SESSION, _record(events[0]), with_date=True).startswith(
        "2025-06-01 12:00:01.123 ")


def test_colour_only_when_asked() -> None:
    deny = _record(session_events()[5])
    assert "\x1b[31m" in render_record(SESSION, deny, color=True)
    allow = _record(session_events()[3])
    assert "\x1b[32m" in render_record(SESSION, allow, color=True)
    assert "\x1b" not in render_dropped(256, 10)
    assert "\x1b[33m" in render_dropped(256, 10, color=True)


def test_names_from_the_session_cannot_drive_the_terminal() -> None:
    hostile = FsDenied(path="/tmp/\x1b]0;owned\x07\x1b[2J\u202egnp.exe", operation="read")
    line = render_record(SESSION, _record(hostile), color=True)
    assert "\x1b]" not in line and "\x07" not in line and "\x1b[2J" not in line
    assert "\u202e" not in line
    assert "\\x1b]0;owned\\x07" in line and "\\u202e" in line
    net = Network(mode="connect", decision="deny", host="a\nb", port=1, reason="x\ry")
    assert "\n" not in render_record(SESSION, _record(net))
    assert printable("plain ascii and ünïcode") == "plain ascii and ünïcode"


def test_a_rate_limit_summary_says_how_many_were_not_recorded() -> None:
    summary = FsDenied(path="/etc/shadow", operation="read", errno="EACCES", suppressed=41)
    assert summarize(summary) == ("read /etc/shadow (EACCES); 41 more not recorded "
                                  "(rate limit)")
    assert "not recorded" not in summarize(FsDenied(path="/x", operation="read"))
