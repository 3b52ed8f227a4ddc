"""The lean attached launch (``nonoctl._lean``) sends what the full client sends, declines
everything else before sending anything, and reads the daemon's replies as the full client
does (the plain ones by hand, the others through the full decoder)."""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from nonoctl import _cli, _lean
from nonoctl.client import UnexpectedReply, launch_environment
from nonod import protocol as p


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NONO_SOCKET", str(tmp_path / "nonod.sock"))
    for name in [n for n in os.environ if n.startswith("NONO_") and n != "NONO_SOCKET"]:
        monkeypatch.delenv(name)
    return tmp_path


def _full_launch(words: list[str]) -> p.Launch:
    """The ``Launch`` ``_cli._cmd_launch`` builds for ``words`` (attached)."""
    cut = words.index("--")
    args = _cli._fast_args(words[:cut])
    assert args is not None
    return p.Launch(
        argv=tuple(words[cut + 1:]), profile=_cli._profile_arg(args.profile or args.profile_name),
        cwd=os.getcwd(), env=launch_environment()[0], options=_cli._options(args),
        name=args.name, detach=False, stdio="passed", term=_cli._term_size(), dry_run=False)


@pytest.mark.parametrize("words", [
    ["launch", "--", "/bin/true"],
    ["run", "--allow-cwd", "--block-net", "--", "/bin/true"],
    ["launch", "gitbot", "--name", "bot-1", "--allow", "src", "--read", "~/docs", "--write",
     "/tmp/w", "--allow-file", "a.txt", "--read-file", "/etc/hosts", "--write-file", "out",
     "--workdir", ".", "--allow-domain", "example.com", "--allow-domain", "*.example.org",
     "--network-profile", "developer", "--listen-port", "8080", "--credential", "github",
     "--env-credential-map", "gh=GH_TOKEN", "--audit-sign-key", "file:///k", "--memory",
     "512M", "--max-processes", "64", "--cpus", "0.5", "--cpu-weight", "200", "--io-weight",
     "300", "--timeout", "1h30m", "--", "python3", "-c", "print('é\\t\"x\"')"],
    ["launch", "--profile", "./mine.json", "--cpus", "1e-3", "--", "a\x01b", "ünï", "\u2028"],
    ["launch", "--allow-cwd"],  # no command: the profile's
])
def test_the_lean_launch_is_the_full_clients(words: list[str], in_tmp: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODD", "tab\there \x7f ünï \"quoted\" \\ back")
    text, path = _lean._prepare(list(words))
    expected = _full_launch(words if "--" in words else [*words, "--"])
    assert p.decode_request(text) == expected
    assert msgspec.json.decode(text) == msgspec.json.decode(p.encode(expected))
    assert path == str(in_tmp / "nonod.sock")


@pytest.mark.parametrize(("words", "env"), [
    (["ps"], {}),  # (its own lean path: _ps)
    (["--version", "ps"], {}),
    (["launch", "--json", "--", "true"], {}),
    (["launch", "-d", "--", "true"], {}),
    (["launch", "--dry-run", "--", "true"], {}),
    (["launch", "--trust-override", "--", "true"], {}),
    (["launch", "-p", "a", "b", "--", "true"], {}),
    (["launch", "--help"], {}),
    (["launch", "--allow-c", "--", "true"], {}),  # an abbreviation: argparse's
    (["launch", "--cpus", "nan", "--", "true"], {}),  # msgspec would send null
    (["launch", "--", "\udcff"], {}),  # msgspec cannot encode it
    (["launch", "--", "a\x00b"], {}),  # the Launch check refuses it
    (["launch", "--", ""], {}),
    (["launch", "--env-credential-map", "noequals", "--", "true"], {}),
    (["launch", "--", "true"], {"NONO_ALLOW": "a,,b"}),  # refused variable value
    (["launch", "--", "true"], {"NONO_STARTUP_TIMEOUT": "5"}),  # a note to show
    (["launch", "--", "true"], {"HUGE": "x" * p.MAX_ARG_STRLEN}),  # left out, with a note
    (["launch", "--no-sandbox-please", "--", "true"], {}),
])
def test_anything_else_is_declined_before_a_connection(
        words: list[str], env: dict[str, str], in_tmp: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(_lean.Declined):
        _lean._prepare(list(words))
    assert _lean.run(words) is None  # and nothing was written, nothing connected


def test_a_socket_that_cannot_be_trusted_is_declined(in_tmp: Path) -> None:
    """The full path then refuses it with its own message (no byte sent here either)."""
    shared = in_tmp / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(shared / "nonod.sock"))
        listener.listen(1)
        with pytest.raises(_lean.Declined):
            _lean._open(str(shared / "nonod.sock"))
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.fixture
def conversation() -> Iterator[_lean._Conversation]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield _lean._Conversation(ours, _lean._ws.ClientCodec(max_message=1 << 20))


def _welcome() -> str:
    return p.encode(p.Welcome(protocol=1, daemon="0.1.0", pid=1, uid=0)).decode()


def _detail(**fields: object) -> p.SessionDetail:
    started = dt.datetime(2026, 12, 6, 9, tzinfo=dt.UTC)
    return p.SessionDetail(id="abcd", name="bot", state="running", pid=5, started_at=started,
                           uid=0, gid=0, cwd="/", **fields)  # type: ignore[arg-type]


def test_plain_replies_are_read_by_hand(conversation: _lean._Conversation) -> None:
    conversation._text(_welcome())
    quiet = p.Enforcement(fully_enforced=True, summary="fully enforced")
    conversation._text(p.encode(p.Launched(session=_detail(enforcement=quiet))).decode())
    conversation._text(p.encode(p.Exited(session="abcd", exit_code=3)).decode())
    conversation._text(p.encode(p.Exited(session="abcd", signal=9, reason="stopped")).decode())
    conversation._text(p.encode(p.Exited(session="abcd")).decode())
    assert conversation.replies == [("launched", "abcd"), ("exited", 3), ("exited", 137),
                                    ("exited", 1)]


@pytest.mark.parametrize("fields", [
    {"enforcement": p.Enforcement(fully_enforced=False, summary="partly enforced")},
    {"weakened": ("environment.allow_vars: PATH",)},
    {"secret_env": ("TOKEN",)},
    {"secrets_bound": ("gh -> https://api.github.com",)},
])
def test_a_session_to_warn_about_is_read_by_the_full_decoder(
        fields: dict[str, object], conversation: _lean._Conversation) -> None:
    conversation._text(_welcome())
    detail = _detail(**fields)
    conversation._text(p.encode(p.Launched(session=detail)).decode())
    assert conversation.replies == [("launched", detail)]


def test_errors_and_malformed_replies_go_through_the_full_decoder(
        conversation: _lean._Conversation) -> None:
    conversation._text(_welcome())
    error = p.ErrorReply(code="launch.exec", message="no", details={"step": "exec"})
    conversation._text(p.encode(error).decode())
    conversation._text(p.encode(p.Ok()).decode())
    assert conversation.replies == [("error", error), ("other", p.Ok())]
    with pytest.raises(UnexpectedReply, match="cannot decode a message from nonod"):
        conversation._text('{"type": "exited", "session": "abcd", "exit_code": "3"}')
    with pytest.raises(UnexpectedReply, match="cannot decode a message from nonod"):
        conversation._text('{"type": "exited", "session": "abcd"} trailing')


def test_a_hello_answered_otherwise_is_refused_as_the_full_client_refuses_it(
        conversation: _lean._Conversation) -> None:
    with pytest.raises(UnexpectedReply, match="the daemon answered hello with `ok`"):
        conversation._text(p.encode(p.Ok()).decode())
    assert conversation.closed


def test_the_exit_statuses_are_the_full_clients() -> None:
    assert (_lean.EXIT_FAILURE, _lean.EXIT_DAEMON, _lean.EXIT_INTERRUPTED) == (
        _cli.EXIT_FAILURE, _cli.EXIT_DAEMON, _cli.EXIT_INTERRUPTED)
    for code, number in ((0, None), (3, None), (None, 9), (None, None), (1, 15)):
        exited = p.Exited(session="s", exit_code=code, signal=number)
        assert _lean._status(code, number) == _cli.shell_status(exited)


def test_every_launch_flag_reaches_its_option(in_tmp: Path) -> None:
    """Spelled out, not derived from ``option_values`` (which both paths share)."""
    home = os.path.expanduser("~")
    text, _ = _lean._prepare([
        "launch", "--allow-cwd", "--allow", "src", "--read", "~/docs", "--write", "/tmp/w",
        "--allow-file", "a.txt", "--read-file", "/etc/hosts", "--write-file", "out",
        "--workdir", "wd", "--block-net", "--allow-domain", "example.com",
        "--network-profile", "developer", "--listen-port", "8080", "--credential", "github",
        "--env-credential-map", "gh=GH_TOKEN", "--audit-sign-key", "k", "--memory", "512M",
        "--max-processes", "64", "--cpus", "0.5", "--cpu-weight", "200", "--io-weight", "300",
        "--timeout", "90s", "--name", "bot", "--", "true"])
    launch = p.decode_request(text)
    assert isinstance(launch, p.Launch)
    assert (launch.argv, launch.name, launch.stdio, launch.detach) == (
        ("true",), "bot", "passed", False)
    assert launch.options == p.LaunchOptions(
        allow_cwd=True, allow=(f"{in_tmp}/src",), read=(f"{home}/docs",), write=("/tmp/w",),
        allow_file=(f"{in_tmp}/a.txt",), read_file=("/etc/hosts",),
        write_file=(f"{in_tmp}/out",), workdir=f"{in_tmp}/wd", block_net=True,
        allow_domain=("example.com",), network_profile="developer", listen_ports=(8080,),
        credentials=("github",), env_credential_map=("gh=GH_TOKEN",), audit_sign_key="k",
        memory=512 << 20, max_processes=64, cpus=0.5, cpu_weight=200, io_weight=300,
        timeout=90.0)


def _row_entry(**fields: object) -> dict[str, object]:
    info = p.SessionRow(id="abcd", name="bot", state="exited", pid=7, argv=("sh", "-c", "x"),
                        started_at=dt.datetime(2026, 12, 6, 9, tzinfo=dt.UTC), signal=15,
                        parent="beef")
    entry: dict[str, object] = msgspec.json.decode(p.encode(p.SessionList(sessions=(info,))))[
        "sessions"][0]
    entry.update(fields)
    return entry


def test_a_brief_session_is_read_as_the_full_decoder_reads_it() -> None:
    entry = _row_entry()
    row = _lean._Row(entry)
    info = p.decode_reply(msgspec.json.encode({"type": "sessions", "sessions": [entry]}))
    assert isinstance(info, p.SessionList)
    for name in _lean._Row.__slots__:
        got, want = getattr(row, name), getattr(info.sessions[0], name)
        assert (tuple(got) if name == "argv" else got) == want, name


@pytest.mark.parametrize("fields", [
    {"state": "sleeping"}, {"pid": True}, {"pid": "7"}, {"argv": ["sh", 1]}, {"argv": "sh"},
    {"started_at": "yesterday"}, {"started_at": None}, {"id": None}, {"name": 5},
    {"exit_code": 1.5}, {"parent": 3},
])
def test_a_session_it_cannot_check_is_left_to_the_full_path(fields: dict[str, object]) -> None:
    with pytest.raises(_lean.Declined):
        _lean._Row(_row_entry(**fields))
    del fields
    with pytest.raises(_lean.Declined):
        _lean._Row({k: v for k, v in _row_entry().items() if k != "started_at"})


@pytest.mark.parametrize("words", [["launch", "--", "true"], ["ps"]])
def test_a_daemon_that_never_answers_is_said_once_not_waited_for_twice(
        words: list[str], in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Declining would have the full path wait out its own timeout on a second connection."""
    monkeypatch.setattr(_lean, "CONNECT_TIMEOUT", 0.3)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(in_tmp / "nonod.sock"))
        listener.listen(4)
        assert _lean.run(words) == _cli.EXIT_DAEMON
        first, _ = listener.accept()
        first.close()
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()  # one connection, not two
    assert capsys.readouterr().err == "nonoctl: nonod did not answer in time\n"


@pytest.mark.parametrize(("answer", "said"), [
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope",
     "nonoctl: nonod refused the connection (403): nope\n"),
    (b"", "nonoctl: nonod closed the connection during the handshake\n"),
    (b"SSH-2.0\r\n\r\n", "nonoctl: nonod broke the WebSocket protocol: not an HTTP answer: "
     "'SSH-2.0'\n"),
])
@pytest.mark.parametrize("words", [["launch", "--", "true"], ["ps"]])
def test_a_refused_upgrade_is_said_once_as_the_full_client_says_it(
        answer: bytes, said: str, words: list[str], in_tmp: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(in_tmp / "nonod.sock"))
        listener.listen(4)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

        server = threading.Thread(target=serve)
        server.start()
        assert _lean.run(words) == _cli.EXIT_DAEMON
        server.join(10)
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()  # one connection, not two
    assert capsys.readouterr().err == said
