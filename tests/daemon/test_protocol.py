"""The control protocol: every message round-trips; bad input fails with a path; light import."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nonod import protocol as p

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
INFO = p.SessionInfo(id="abcd1234", name="bot", state="running", pid=42, profile="gitbot",
                     argv=("python3", "bot.py"), started_at=NOW)
DETAIL = p.SessionDetail(id="abcd1234", name="bot", state="exited", started_at=NOW, uid=1000,
                         gid=1000, cwd="/srv/bot", exit_code=3, reason="stopped",
                         enforcement=p.Enforcement(fully_enforced=False, summary="partial",
                                                   layers=(p.Layer(name="landlock",
                                                                   state="partial"),)))
TERM = p.TermSize(rows=24, cols=80)

REQUESTS: list[p.Request] = [
    p.Hello(protocol=1, client="nonoctl"),
    p.Launch(argv=("sh", "-c", "exit 7"), cwd="/tmp", env={"PATH": "/bin"},
             options=p.LaunchOptions(allow_cwd=True, read=("/etc",), listen_ports=(5001,),
                                     env_credential_map=("op://x=TOKEN",)),
             name="bot-1", detach=True, stdio="pty", term=TERM),
    p.Launch(cwd="/", profile="gitbot", stdio="passed"),
    p.ListSessions(all=True),
    p.ListSessions(brief=True),
    p.Inspect(session="abcd"),
    p.Stop(session="bot", timeout=2.5, force=False),
    p.Wait(session="bot"),
    p.SendSignal(session="bot", signal=15),
    p.Logs(session="bot", follow=True, tail=10),
    p.Attach(session="bot", term=TERM),
    p.Input(data=b"\x03ls\n"),
    p.Resize(term=TERM),
    p.Detach(),
    p.Prune(),
    p.Status(),
    p.Shutdown(),
    p.Subscribe(session=None),
    p.AuditFollow(session="bot", kinds=("network", "signal"), from_start=True, follow=False),
    p.AuditFollow(),
    p.Launch(cwd="/", options=p.LaunchOptions(audit_sign_key="file:///k/audit.key")),
    p.ProfileList(),
    p.ProfileShow(profile="gitbot", resolved=True, cwd="/srv"),
    p.ProfileValidate(profile="/tmp/x.json"),
]
REPLIES: list[p.Reply] = [
    p.Welcome(protocol=1, daemon="0.1.0", pid=1, uid=0),
    p.ErrorReply(code="session.not_found", message="no session 'x'", hint="ps --all",
                 details={"step": "exec"}),
    p.Ok(),
    p.Launched(session=DETAIL),
    p.DryRun(argv=("true",), cwd="/", uid=0, gid=0, policy=msgspec.Raw(b'{"name":"x"}')),
    p.SessionList(sessions=(INFO,)),
    p.SessionReply(session=DETAIL),
    p.Exited(session="abcd1234", signal=9, reason="stopped"),
    p.Output(data=b"\x1b[31mred\r\n", offset=7),
    p.EndOfOutput(reason="lagged"),
    p.Attached(session="abcd1234"),
    p.Detached(),
    p.Pruned(sessions=("a", "b")),
    p.DaemonStatus(pid=1, version="0", protocol=1, uid=0, system=False, socket="/s",
                   started_at=NOW, state_dir="/st"),
    p.SessionEvent(kind="started", session=INFO),
    p.AuditRecord(session="abcd1234", record=msgspec.Raw(b'{"seq":1}')),
    p.AuditDropped(reason="lagged", buffer=256, delivered=1000),
    p.Profiles(profiles=(p.ProfileEntry(name="gitbot", source="builtin"),)),
    p.ProfileDocument(name="g", source="g", resolved=False, document=msgspec.Raw(b"{}")),
    p.ProfileValid(name="g", source="g", notes=("missing: /x",)),
]


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: type(m).__name__)
def test_every_request_round_trips(message: p.Request) -> None:
    assert p.decode_request(p.encode(message)) == message


@pytest.mark.parametrize("message", REPLIES, ids=lambda m: type(m).__name__)
def test_every_reply_round_trips(message: p.Reply) -> None:
    decoded = p.decode_reply(p.encode(message))
    if isinstance(message, p.DryRun | p.ProfileDocument | p.AuditRecord):  # Raw: by identity
        assert p.encode(decoded) == p.encode(message)
    else:
        assert decoded == message


def test_tags_are_unique_per_direction() -> None:
    for union in (p.AnyRequest, p.AnyReply):
        tags = [cls.__struct_config__.tag for cls in union.__args__]
        assert len(tags) == len(set(tags))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"type": "launchx"}', r"Invalid value 'launchx' - at `\$.type`"),
        (b'{"protocol": 1}', "missing required field `type`"),
        (b'{"type": "hello", "protocol": "1"}', r"Expected `int`, got `str` - at `\$.protocol`"),
        (b'{"type": "hello", "protocol": 1, "extra": 2}', "unknown field `extra`"),
        (b'{"type": "launch", "cwd": "relative"}', "cwd must be an absolute path"),
        (b'{"type": "launch", "cwd": "/", "argv": ["a\\u0000b"]}', "NUL"),
        (b'{"type": "launch", "cwd": "/", "argv": [""]}', "argv\\[0\\] is empty"),
        (b'{"type": "launch", "cwd": "/", "env": {"A=B": "c"}}', "not a variable name"),
        (b'{"type": "launch", "cwd": "/", "stdio": "files"}', r"at `\$.stdio`"),
        (b'{"type": "launch", "cwd": "/", "name": "-bad"}', r"at `\$.name`"),
        (b'{"type": "launch", "cwd": "/", "options": {"read": ["etc"]}}', "absolute"),
        (b'{"type": "launch", "cwd": "/", "options": {"listen_ports": [0]}}',
         r"at `\$.options.listen_ports\[0\]`"),
        (b'{"type": "signal", "session": "x", "signal": 99}', r"<= 64 - at `\$.signal`"),
        (b'{"type": "stop", "session": "", "force": true}', r"at `\$.session`"),
        (b'{"type": "input", "data": "' + b"A" * 90000 + b'"}', r"at `\$.data`"),
        (b'[1, 2]', "Expected `object`, got `array`"),
    ],
)
def test_bad_requests_name_what_is_wrong(data: bytes, match: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=match):
        p.decode_request(data)


def test_malformed_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        p.decode_request(b'{"type": "hello", ')


def test_replies_tolerate_fields_a_newer_daemon_adds() -> None:
    reply = p.decode_reply(b'{"type": "ok", "something_new": [1, 2]}')
    assert reply == p.Ok()


@given(st.binary(max_size=512))
def test_random_bytes_fail_only_with_msgspec_errors(data: bytes) -> None:
    try:
        p.decode_request(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
), st.sampled_from([cls.__struct_config__.tag for cls in p.AnyRequest.__args__]))
def test_wrongly_typed_fields_fail_only_with_validation_errors(value: object, tag: str) -> None:
    for key in ("session", "argv", "cwd", "protocol", "data", "term", "options", "env"):
        document = msgspec.json.encode({"type": tag, key: value})
        try:
            p.decode_request(document)
        except msgspec.ValidationError:
            pass


def test_the_client_side_imports_neither_trio_nor_the_daemon() -> None:
    """Nor wsproto/h11 (the blocking client has its own codec) nor dataclasses (with inspect,
    ast, dis): together about 30 ms of every command's start-up (docs/cli.md, Speed)."""
    code = (
        "import sys; sys.modules['typing_extensions'] = None\n"
        "import nonoctl._cli, nonoctl.client, nonod.protocol\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'structlog', 'trio_websocket', 'wsproto', 'h11', 'dataclasses') or m in "
        "('nonod.sessions', 'nonod.sandbox', 'nonod.control._server', 'nonod.profiles'))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.decode().strip() == ""


def test_a_full_session_list_request_reads_as_it_did_before_brief() -> None:
    # A daemon from before `brief` refuses unknown fields: what ps --json and top send must
    # not carry it (nonoctl ps's table falls back to this when its brief request is refused).
    assert p.encode(p.ListSessions()) == b'{"type":"list"}'
    assert p.encode(p.ListSessions(all=True)) == b'{"type":"list","all":true}'
    assert p.encode(p.ListSessions(brief=True)) == b'{"type":"list","brief":true}'


def test_a_brief_session_list_leaves_its_nulls_out_and_decodes_as_before() -> None:
    # `nonoctl ps`'s table with a thousand sessions: each entry without the fields at their
    # defaults (most of its bytes were nulls), and any client's decoder still reads the
    # SessionInfo it would have read with them written.
    ended = p.SessionRow(id="e", name="done", state="exited", started_at=NOW, ended_at=NOW,
                         exit_code=0, parent="abcd1234")
    for row in (p.SessionRow(**msgspec.structs.asdict(INFO)), ended):
        wire = p.encode(p.SessionList(sessions=(row,)))
        assert b"null" not in wire and b"enforcement" not in wire
        full = p.SessionInfo(**msgspec.structs.asdict(row))
        assert p.decode_reply(wire) == p.SessionList(sessions=(full,))
        assert len(wire) < len(p.encode(p.SessionList(sessions=(full,)))) * 0.7
