"""Talk to nonod from Python: a blocking client (``nonoctl._ws``: the standard library only)
and a trio client (trio-websocket).

Blocking, for scripts and for ``nonoctl`` itself (it must not pay for importing trio)::

    from nonoctl.client import Client

    with Client() as nono:
        session = nono.launch(["python3", "bot.py"], profile="gitbot", name="bot")
        print(nono.sessions())
        with nono.events() as events:        # a dedicated connection
            for event in events:
                print(event.kind, event.session.id)
                break
        nono.stop(session.id)

Async (trio), for a multi-agent host that already runs an event loop::

    from nonoctl.client import open_async_client

    async with open_async_client() as nono:
        session = await nono.launch(["sleep", "60"], detach=True)
        async with nono.events() as events:
            async for event in events:
                ...

Both connect to ``NONO_SOCKET`` or the user daemon's default socket and start a user daemon
if none answers (unless ``autostart=False`` or ``NONO_NO_AUTOSTART=1``). A refused request
raises :class:`RemoteError`, whose ``reply`` is the daemon's ``ErrorReply``.

:class:`Connection` is the low-level blocking conversation (used by ``nonoctl`` for streams:
attached launches with descriptor passing, ``attach``, ``logs -f``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, Union, cast, final

import msgspec

from nonod import _wire
from nonod import protocol as p
from nonod.control._socket import client_socket_path
from nonod.control._socketdir import (
    StrPath,
    UnsafeSocketPath,
    parent_and_name,
    plain_path,
    trusted_socket_dir,
)
from nonod.conversation import State, next_state
from nonod.errors import NonoError

from . import _lean, _ws

_send_fds = _lean.send_with_fds

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

_R = TypeVar("_R")

CLIENT_NAME: Final = "nonoctl"
CONNECT_TIMEOUT: Final = 10.0
AUTOSTART_TIMEOUT: Final = 30.0
#: Largest reply the client accepts (the daemon's output chunks are 64 KiB).
MAX_REPLY_BYTES: Final = 64 * 1024 * 1024


class ClientError(NonoError):
    """The daemon could not be reached or the conversation broke."""

    code = "client.error"


class DaemonUnreachable(ClientError):
    code = "client.unreachable"

    def __init__(self, message: str, *, hint: str | None = None, errno_: int = 0) -> None:
        super().__init__(message, hint=hint)
        self.errno = errno_


class UntrustedDaemon(ClientError):
    """What listens at the socket path is not provably our daemon: nothing was sent to it."""

    code = "client.untrusted_daemon"


class ConnectionLost(ClientError):
    code = "client.connection_lost"


class UnexpectedReply(ClientError):
    code = "client.unexpected_reply"


class NoWorkingDirectory(NonoError):
    """The caller's current directory cannot be named (deleted, or above it unsearchable)."""

    code = "client.cwd"


class RemoteError(NonoError):
    """The daemon refused a request. ``reply.code`` is the daemon's error code."""

    code = "client.remote"

    def __init__(self, reply: p.ErrorReply) -> None:
        super().__init__(reply.message, hint=reply.hint)
        self.reply = reply

    @property
    def remote_code(self) -> str:
        return self.reply.code


def check(reply: p.AnyReply) -> p.AnyReply:
    """``reply``, unless it is an ErrorReply (then RemoteError)."""
    if isinstance(reply, p.ErrorReply):
        raise RemoteError(reply)
    return reply


# ------------------------------------------------------------------------------- blocking


@final
class Connection:
    """One blocking WebSocket conversation with the daemon over its Unix socket."""

    def __init__(self, sock: socket.socket, path: StrPath) -> None:
        self.sock = sock
        self.path = plain_path(path)
        self._ws = _ws.ClientCodec(max_message=MAX_REPLY_BYTES)
        self._replies: deque[p.AnyReply] = deque()
        self.closed = False
        self.welcome: p.Welcome | None = None
        #: A deferred ``hello``: it goes out with the first request (``open(defer_hello=)``).
        self._hello: bytes | None = None
        self._awaiting_welcome = False
        #: How replies decode: the full reply union unless ``expect_only`` narrowed it.
        self._decoder: msgspec.json.Decoder[p.AnyReply] | None = None

    # -- opening
    @classmethod
    def open(
        cls, path: StrPath, *, timeout: float | None = CONNECT_TIMEOUT, client: str = CLIENT_NAME,
        defer_hello: bool = False,
    ) -> Connection:
        """Connect, handshake and exchange ``hello``; raise DaemonUnreachable/RemoteError.

        With ``defer_hello``, the ``hello`` goes out in the same write as the first request,
        saving a round trip: the daemon handles that request only once it has accepted the
        ``hello`` (it closes the connection otherwise), and ``receive`` checks the welcome
        before it returns any reply, raising as ``open`` would have."""
        sock = connect_trusted(path, timeout)
        conn = cls(sock, path)
        hello = Call(p.Hello(protocol=p.PROTOCOL_VERSION, client=client), p.Welcome, _same,
                     state=State.HELLO)
        try:
            conn._handshake()
            if defer_hello:
                conn._hello = conn._ws.text(p.encode(hello.request).decode("utf-8"))
                return conn  # the timeout stays until the welcome is in
            reply = conn.request(hello.request)
        except BaseException:
            conn.close()
            raise
        conn._welcomed(reply)
        return conn

    def _welcomed(self, reply: p.AnyReply) -> None:
        """Take the daemon's answer to ``hello``."""
        if not isinstance(reply, p.Welcome):
            self.close()
            raise UnexpectedReply(f"the daemon answered hello with `{_tag(reply)}`")
        self.welcome = reply
        self.sock.settimeout(None)

    def _handshake(self) -> None:
        self._send_raw(self._ws.request("localhost", p.WS_RESOURCE, p.WS_SUBPROTOCOL))
        while True:
            self._receive_raw()
            try:
                if self._ws.read_upgrade():
                    return  # frames that came with it wait in the codec for receive()
            except (_ws.Rejected, _ws.ProtocolError) as exc:
                raise ConnectionLost(_lean.handshake_failure(exc)) from None
            if self.closed:
                raise ConnectionLost("nonod closed the connection during the handshake")

    # -- raw I/O
    def _send_raw(self, data: bytes, fds: Sequence[int] = ()) -> None:
        try:
            _lean.send_frame(self.sock, data, fds)
        except OSError as exc:
            self.closed = True
            raise ConnectionLost(_lean.lost_message(exc)) from exc

    def _receive_raw(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError as exc:
            raise ConnectionLost("nonod did not answer in time") from exc
        except OSError as exc:
            self.closed = True
            raise ConnectionLost(f"lost the connection to nonod: {exc.strerror or exc}") from exc
        if not data:
            self.closed = True
            return
        self._ws.receive_data(data)

    def expect_only(self, *kinds: type[p.Reply]) -> None:
        """Decode what comes as ``Welcome``, ``ErrorReply`` or one of ``kinds`` only: for a
        one-shot command, whose first reply is its only one. A decoder of a few types is
        built in ~0.2 ms, the whole reply union's in ~0.7 ms; anything else the daemon sends
        fails to decode (``UnexpectedReply``), as a reply of the wrong type would fail."""
        self._decoder = msgspec.json.Decoder(
            cast("type[p.AnyReply]", Union[(p.Welcome, p.ErrorReply, *kinds)]))

    def _decode(self, event: _ws.Text) -> p.AnyReply:
        try:
            if self._decoder is None:
                return p.decode_reply(event.data)
            return self._decoder.decode(event.data)
        except (ValueError, TypeError, RecursionError) as exc:
            raise UnexpectedReply(f"cannot decode a message from nonod: {exc}") from exc

    def _drain_events(self) -> None:
        try:
            for event in self._ws.events():
                if isinstance(event, _ws.Text) and self._awaiting_welcome:
                    self._awaiting_welcome = False
                    reply = self._decode(event)
                    if isinstance(reply, p.ErrorReply):
                        self.close()
                        raise RemoteError(reply)
                    self._welcomed(reply)
                elif isinstance(event, _ws.Text):
                    self._replies.append(self._decode(event))
                elif isinstance(event, _ws.Ping):
                    self._send_raw(self._ws.pong(event.payload))
                elif isinstance(event, _ws.Close):
                    with contextlib.suppress(ConnectionLost):
                        self._send_raw(self._ws.close(event.code if event.code != 1005 else 1000))
                    self.closed = True
                    self._close_reason = event.reason
                    self._close_code = event.code
                    return
                else:
                    raise UnexpectedReply("nonod sent a binary frame")
        except _ws.ProtocolError as exc:
            self.closed = True
            raise ConnectionLost(f"nonod broke the WebSocket protocol: {exc}") from None

    # -- messages
    def send(self, message: p.Request, *, fds: Sequence[int] = ()) -> None:
        """Send one request; ``fds`` ride with its frame (SCM_RIGHTS)."""
        if self.closed:
            raise ConnectionLost("the connection to nonod is closed")
        frame = self._ws.text(p.encode(message).decode("utf-8"))
        if self._hello is not None:
            frame, self._hello = self._hello + frame, None
            self._awaiting_welcome = True
        self._send_raw(frame, fds)

    def receive(self) -> p.AnyReply:
        """The next message from the daemon (blocking)."""
        while not self._replies:
            self._raise_if_closed()
            self._receive_raw()
            self._drain_events()
        return self._replies.popleft()

    def _raise_if_closed(self) -> None:
        if self.closed:
            code = getattr(self, "_close_code", 0)
            reason = getattr(self, "_close_reason", "")
            detail = f" (code {code}{': ' + reason if reason else ''})" if code else ""
            raise ConnectionLost(f"nonod closed the connection{detail}")

    def receive_available(self) -> list[p.AnyReply]:
        """Read once (the socket is readable) and return every complete message; once the
        connection is closed and nothing is left, ConnectionLost (never an empty list, which
        would have a select loop spin on the closed socket)."""
        if not self._replies:
            self._raise_if_closed()
            self._receive_raw()
            self._drain_events()
            if not self._replies:
                self._raise_if_closed()
        out = list(self._replies)
        self._replies.clear()
        return out

    def has_buffered(self) -> bool:
        return bool(self._replies)

    def closed_while_idle(self) -> bool:
        """True if the daemon closed this connection while no request was outstanding (its
        ``idle_timeout``); reads what is already there without waiting."""
        import select

        if not self.closed and not self._replies and select.select([self.sock], [], [], 0)[0]:
            with contextlib.suppress(ClientError):
                self._receive_raw()
                self._drain_events()
        return self.closed and not self._replies

    def request(self, message: p.Request, *, fds: Sequence[int] = ()) -> p.AnyReply:
        """Send a request and return its reply; ErrorReply raises RemoteError."""
        self.send(message, fds=fds)
        return check(self.receive())

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def codec(self) -> _ws.ClientCodec:
        return self._ws

    def frames_for(self, message: p.Request) -> bytes:
        """The frames that ``send(message)`` would send (the deferred ``hello`` first), for a
        caller that carries the conversation on itself from here (``_lean.attend``)."""
        if self.closed:
            raise ConnectionLost("the connection to nonod is closed")
        frame = self._ws.text(p.encode(message).decode("utf-8"))
        if self._hello is not None:
            frame, self._hello = self._hello + frame, None
        return frame

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(ConnectionLost):
                self._send_raw(self._ws.close(1000))
            self.closed = True
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def connect_trusted(path: StrPath, timeout: float | None) -> socket.socket:
    """A socket connected to the daemon at ``path``, authenticated before a byte is sent.

    Every directory on the path must belong to us or root and be writable by nobody else
    (``nonod.control._socketdir``), and the listening process must run as us or as root
    (``SO_PEERCRED``). Anything else is refused with UntrustedDaemon: a fake server planted
    by another user would otherwise get our secrets, environment and terminal.
    """
    owners = {os.geteuid(), 0}
    path = plain_path(path)
    directory, name = parent_and_name(path)
    try:
        real = trusted_socket_dir(directory, owners=owners)
        real = os.path.join(real, name) if name else real  # pathlib's ``real / name``
        sock = _connect_unix(real, timeout)
    except UnsafeSocketPath as exc:
        raise UntrustedDaemon(exc.message, hint=exc.hint) from exc
    except OSError as exc:
        raise DaemonUnreachable(
            f"cannot connect to nonod at {path}: {exc.strerror or exc}",
            hint=_connect_hint(exc),
            errno_=exc.errno or 0,
        ) from exc
    _, uid, _ = struct.unpack(
        "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    )
    if uid not in owners:
        sock.close()
        raise untrusted_peer(path, uid)
    return sock


def untrusted_peer(path: str, uid: int) -> UntrustedDaemon:
    """The error for a daemon socket at ``path`` whose listener runs as ``uid``, neither us
    nor root (``_lean`` raises it too)."""
    return UntrustedDaemon(
        f"the process listening on {path} runs as uid {uid}, not as you (uid "
        f"{os.geteuid()}) or root: it is not your nonod; nothing was sent to it",
        hint="another user may have planted it; remove the socket's directory or use "
        "another path (NONO_SOCKET, --socket)",
    )


def _connect_unix(path: StrPath, timeout: float | None) -> socket.socket:
    """Connect to the daemon's socket. A Unix socket whose accept queue is full answers
    EAGAIN at once instead of waiting (unlike TCP): a daemon busy accepting is retried until
    ``timeout``, not reported as unreachable."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
            return sock
        except BlockingIOError:
            sock.close()
            if deadline is not None and time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
        except BaseException:
            sock.close()
            raise


def _connect_hint(exc: OSError) -> str | None:
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return "is nonod running? `nonoctl daemon start` starts it"
    if exc.errno == errno.EACCES:
        return "the socket belongs to another user; each user runs their own nonod"
    return None


def _tag(reply: p.AnyReply) -> str:
    return str(type(reply).__struct_config__.tag)


def start_daemon(path: StrPath | None = None, *, timeout: float = AUTOSTART_TIMEOUT) -> None:
    """Start a user daemon and return once it accepts connections (``nonod --daemonize``
    detaches once it serves)."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "nonod", "--daemonize"]
    if path is not None:
        argv += ["--socket", plain_path(path)]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=timeout, check=False, cwd="/",
        )
    except subprocess.TimeoutExpired as exc:
        raise DaemonUnreachable(f"nonod did not become ready within {timeout:.0f}s") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise DaemonUnreachable(f"could not start nonod: {message}")


def connect(
    path: StrPath | None = None,
    *,
    system: bool = False,
    autostart: bool = True,
    timeout: float | None = CONNECT_TIMEOUT,
    client: str = CLIENT_NAME,
    defer_hello: bool = False,
) -> Connection:
    """Open a conversation, starting a user daemon first if none answers (``defer_hello``:
    see ``Connection.open``)."""
    explicit = path is not None or bool(os.environ.get("NONO_SOCKET"))
    target = client_socket_path(system=system) if path is None else plain_path(path)
    try:
        return Connection.open(target, timeout=timeout, client=client,
                               defer_hello=defer_hello)
    except DaemonUnreachable as exc:
        may_start = (
            autostart and not system and os.environ.get("NONO_NO_AUTOSTART") != "1"
            and exc.errno in (errno.ENOENT, errno.ECONNREFUSED)
        )
        if not may_start:
            raise
    start_daemon(target if explicit else None)
    return Connection.open(target, timeout=timeout, client=client, defer_hello=defer_hello)


def working_directory() -> str:
    """``os.getcwd()``, or NoWorkingDirectory saying why there is none."""
    try:
        return os.getcwd()
    except FileNotFoundError as exc:
        raise NoWorkingDirectory(
            "the current directory no longer exists (it was deleted)",
            hint="cd to an existing directory and run the command again",
        ) from exc
    except OSError as exc:
        raise NoWorkingDirectory(
            f"cannot tell the current directory: {exc.strerror or exc}",
            hint="cd to a directory you can reach and run the command again",
        ) from exc


def launch_environment(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The environment a launch carries, and the names of the variables left out: those
    whose ``NAME=value`` is longer than ``execve`` takes (``p.MAX_ARG_STRLEN``; the program
    could not be started with them) or whose name is over the protocol's 4096 characters."""
    kept, dropped = _wire.kept_environment(
        (os.environ if environ is None else environ).items())
    return kept, tuple(dropped)


def launch_request(
    argv: Sequence[str],
    *,
    profile: str | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    options: p.LaunchOptions | None = None,
    name: str | None = None,
    detach: bool = True,
    stdio: p.Stdio = "pty",
    term: p.TermSize | None = None,
    dry_run: bool = False,
) -> p.Launch:
    """A ``Launch`` message with the caller's working directory and environment by default
    (less what ``launch_environment`` leaves out)."""
    return p.Launch(
        argv=tuple(argv), profile=profile, cwd=cwd or working_directory(),
        env=launch_environment(env)[0], options=options or p.LaunchOptions(),
        name=name, detach=detach, stdio=stdio, term=term, dry_run=dry_run,
    )


# ------------------------------------------------------------------ the one client core


@final
class Call(Generic[_R]):
    """One API call, sans-IO: the request, the reply it expects and what the caller gets.
    ``Client`` runs it blocking and ``AsyncClient`` under trio. Built only for requests that
    the conversation's rules (``nonod.conversation``) allow in ``state``. (Not a dataclass:
    ``dataclasses`` stays off the CLI's import path, see docs/cli.md.)"""

    __slots__ = ("expect", "pick", "request", "state")

    def __init__(self, request: p.AnyRequest, expect: type[Any], pick: Callable[[Any], _R],
                 *, state: State = State.IDLE) -> None:
        next_state(state, request)
        self.request = request
        self.expect = expect
        self.pick = pick
        self.state = state

    def result(self, reply: p.AnyReply) -> _R:
        return self.pick(_expect(check(reply), self.expect))


def _same(reply: _R) -> _R:
    return reply


def _hello_call() -> Call[p.Welcome]:
    return Call(p.Hello(protocol=p.PROTOCOL_VERSION, client=CLIENT_NAME), p.Welcome, _same,
                state=State.HELLO)


class _Calls:
    """The method table both clients share: one function per API call."""

    @staticmethod
    def status() -> Call[p.DaemonStatus]:
        return Call(p.Status(), p.DaemonStatus, _same)

    @staticmethod
    def sessions(all: bool) -> Call[tuple[p.SessionInfo, ...]]:
        return Call(p.ListSessions(all=all), p.SessionList, lambda r: r.sessions)

    @staticmethod
    def inspect(session: str) -> Call[p.SessionDetail]:
        return Call(p.Inspect(session=session), p.SessionReply, lambda r: r.session)

    @staticmethod
    def launch(argv: Sequence[str], kwargs: dict[str, object], who: str) -> Call[p.SessionDetail]:
        """A detached launch (``launch_request`` takes the keyword arguments)."""
        kwargs.setdefault("detach", True)
        if kwargs.get("detach") is not True or kwargs.get("stdio") == "passed":
            raise ValueError(f"{who}.launch starts detached sessions (stdio pty or null); "
                             "use Connection for more")
        request = launch_request(argv, **kwargs)  # type: ignore[arg-type]
        return Call(request, p.Launched, lambda r: r.session)

    @staticmethod
    def stop(session: str, timeout: float | None, force: bool) -> Call[p.Exited]:
        return Call(p.Stop(session=session, timeout=timeout, force=force), p.Exited, _same)

    @staticmethod
    def signal(session: str, signum: int) -> Call[None]:
        return Call(p.SendSignal(session=session, signal=signum), p.Ok, lambda _: None)

    @staticmethod
    def wait(session: str) -> Call[p.Exited]:
        return Call(p.Wait(session=session), p.Exited, _same)

    @staticmethod
    def prune() -> Call[tuple[str, ...]]:
        return Call(p.Prune(), p.Pruned, lambda r: r.sessions)

    @staticmethod
    def shutdown() -> Call[None]:
        return Call(p.Shutdown(), p.Ok, lambda _: None)

    @staticmethod
    def subscribe(session: str | None) -> Call[None]:
        return Call(p.Subscribe(session=session), p.Ok, lambda _: None)


calls: Final = _Calls()


@final
class Client:
    """Blocking request/response API on one kept connection (``wait`` included); the
    streams (``events``, ``logs``, ...) use their own connection each."""

    def __init__(
        self,
        path: StrPath | None = None,
        *,
        system: bool = False,
        autostart: bool = True,
        timeout: float | None = CONNECT_TIMEOUT,
    ) -> None:
        self._path = path
        self._system = system
        self._timeout = timeout
        self._conn = connect(path, system=system, autostart=autostart, timeout=timeout)
        self._dropped = False
        self.path = self._conn.path

    def _fresh(self) -> Connection:
        return Connection.open(self.path, timeout=self._timeout)

    def _ask(self, message: p.Request) -> p.AnyReply:
        if self._conn.closed_while_idle():  # the daemon's idle_timeout: nothing was lost
            self._conn.close()
            self._conn = self._fresh()
        elif self._conn.closed and self._dropped:
            self._conn = self._fresh()  # the last one was left in mid-conversation (wait)
            self._dropped = False
        try:
            return self._conn.request(message)
        except RemoteError:
            raise  # a complete answer: the conversation is where it should be
        except BaseException:
            # Interrupted (Ctrl-C in a wait) or broken: the daemon may still answer this
            # request later, so this connection cannot carry the next one.
            self._conn.close()
            self._dropped = True
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, call: Call[_R]) -> _R:
        return call.result(self._ask(call.request))

    def status(self) -> p.DaemonStatus:
        return self._call(calls.status())

    def sessions(self, *, all: bool = False) -> tuple[p.SessionInfo, ...]:
        return self._call(calls.sessions(all))

    def approvals(self, session: str | None = None) -> tuple[p.ApprovalInfo, ...]:
        return _expect(self._ask(p.ApprovalList(session=session)), p.Approvals).approvals

    def approval(self, approval_id: str) -> p.ApprovalReply:
        return _expect(self._ask(p.ApprovalInspect(id=approval_id)), p.ApprovalReply)

    def answer(self, approval_id: str, answer: Literal["once", "session", "deny"], *,
               save_to_profile: bool = False) -> p.ApprovalReply:
        return _expect(self._ask(p.ApprovalAnswer(id=approval_id, answer=answer,
                                                     save_to_profile=save_to_profile)),
                       p.ApprovalReply)

    def inspect(self, session: str) -> p.SessionDetail:
        return self._call(calls.inspect(session))

    def launch(self, argv: Sequence[str] = (), **kwargs: object) -> p.SessionDetail:
        """Start a detached session (``launch_request`` takes the keyword arguments)."""
        return self._call(calls.launch(argv, kwargs, "Client"))

    def stop(self, session: str, *, timeout: float | None = None, force: bool = False) -> p.Exited:
        return self._call(calls.stop(session, timeout, force))

    def signal(self, session: str, signum: int) -> None:
        self._call(calls.signal(session, signum))

    def wait(self, session: str) -> p.Exited:
        """Until the session has exited, on the kept connection (no new connection and
        handshake per wait). Interrupted, it leaves that connection behind: the next request
        opens a fresh one."""
        return self._call(calls.wait(session))

    def prune(self) -> tuple[str, ...]:
        return self._call(calls.prune())

    def shutdown(self) -> None:
        self._call(calls.shutdown())

    def logs(
        self, session: str, *, follow: bool = False, tail: int | None = None
    ) -> Iterator[bytes]:
        with self._fresh() as conn:
            conn.send(p.Logs(session=session, follow=follow, tail=tail))
            while True:
                reply = check(conn.receive())
                if isinstance(reply, p.Output):
                    yield reply.data
                elif isinstance(reply, p.EndOfOutput):
                    return
                else:
                    raise UnexpectedReply(f"unexpected `{_tag(reply)}` in a log stream")

    def audit(
        self,
        session: str | None = None,
        *,
        kinds: Sequence[str] | None = None,
        from_start: bool = False,
        follow: bool = True,
    ) -> AuditStream:
        """Audit records (``AuditFollow``), on a connection of their own: subscribed when this
        returns, so every record written afterwards will be delivered."""
        conn = self._fresh()
        try:
            _expect(conn.request(p.AuditFollow(
                session=session, kinds=tuple(kinds) if kinds is not None else None,
                from_start=from_start, follow=follow)), p.Ok)
        except BaseException:
            conn.close()
            raise
        return AuditStream(conn)

    def events(self, session: str | None = None) -> EventStream:
        """Lifecycle events from now on, on a connection of their own (close it when done)."""
        conn = self._fresh()
        try:
            calls.subscribe(session).result(conn.request(p.Subscribe(session=session)))
        except BaseException:
            conn.close()
            raise
        return EventStream(conn)


@final
class AuditStream:
    """An iterator of ``AuditRecord`` (and a last ``AuditDropped`` if the daemon dropped this
    follower); ends with the stream. Also a context manager that closes its connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        #: Set once the stream has ended: ``complete``, ``lagged``, or ``refused`` (the one
        #: session followed was refused before its program started).
        self.end_reason: str | None = None

    def __iter__(self) -> AuditStream:
        return self

    def __next__(self) -> p.AuditRecord | p.AuditDropped:
        reply = check(self._conn.receive())
        if isinstance(reply, p.AuditRecord | p.AuditDropped):
            return reply
        self.close()
        if isinstance(reply, p.EndOfOutput):
            self.end_reason = reply.reason
            raise StopIteration
        raise UnexpectedReply(f"unexpected `{_tag(reply)}` in an audit stream")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AuditStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@final
class EventStream:
    """An iterator of ``SessionEvent`` and ``ApprovalEvent``; also a context manager that
    closes its connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> p.SessionEvent | p.ApprovalEvent:
        reply = check(self._conn.receive())
        if isinstance(reply, p.SessionEvent | p.ApprovalEvent):
            return reply
        self.close()
        if isinstance(reply, p.EndOfOutput):
            raise StopIteration
        raise UnexpectedReply(f"unexpected `{_tag(reply)}` in an event stream")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _expect(reply: p.AnyReply, kind: type[_R]) -> _R:
    if not isinstance(reply, kind):
        raise UnexpectedReply(f"expected `{kind.__name__}`, got `{_tag(reply)}`")
    return reply


# ----------------------------------------------------------------------------------- trio


@final
class AsyncClient:
    """The same API for trio programs. Create it with :func:`open_async_client`."""

    def __init__(
        self,
        ws: WebSocketConnection,
        path: str,
        reopen: Callable[[], Awaitable[WebSocketConnection]] | None = None,
    ) -> None:
        import trio

        self._ws = ws
        self.path = path
        self._lock = trio.Lock()
        self._reopen = reopen

    async def _receive(self) -> p.AnyReply:
        from trio_websocket import ConnectionClosed

        try:
            data = await self._ws.get_message()
        except ConnectionClosed as exc:
            raise ConnectionLost("nonod closed the connection") from exc
        return p.decode_reply(data)

    async def _send(self, message: p.Request) -> None:
        from trio_websocket import ConnectionClosed

        try:
            await self._ws.send_message(p.encode(message).decode("utf-8"))
        except ConnectionClosed as exc:
            raise ConnectionLost("nonod closed the connection") from exc

    async def _ask(self, message: p.Request) -> p.AnyReply:
        async with self._lock:
            if self._ws.closed is not None and self._reopen is not None:
                # Closed while no request was outstanding (the daemon's idle_timeout):
                # nothing was lost, so a new connection carries on.
                self._ws = await self._reopen()
                hello = _hello_call()
                await self._send(hello.request)
                hello.result(await self._receive())
            await self._send(message)
            return check(await self._receive())

    async def _hello(self) -> p.Welcome:
        hello = _hello_call()
        return hello.result(await self._ask(hello.request))

    async def _call(self, call: Call[_R]) -> _R:
        return call.result(await self._ask(call.request))

    async def status(self) -> p.DaemonStatus:
        return await self._call(calls.status())

    async def sessions(self, *, all: bool = False) -> tuple[p.SessionInfo, ...]:
        return await self._call(calls.sessions(all))

    async def answer(self, approval_id: str, answer: Literal["once", "session", "deny"]
                     ) -> p.ApprovalReply:
        return _expect(await self._ask(p.ApprovalAnswer(id=approval_id, answer=answer)),
                       p.ApprovalReply)

    async def inspect(self, session: str) -> p.SessionDetail:
        return await self._call(calls.inspect(session))

    async def launch(self, argv: Sequence[str] = (), **kwargs: object) -> p.SessionDetail:
        """Start a detached session (``launch_request`` takes the keyword arguments)."""
        return await self._call(calls.launch(argv, kwargs, "AsyncClient"))

    async def stop(
        self, session: str, *, timeout: float | None = None, force: bool = False
    ) -> p.Exited:
        return await self._call(calls.stop(session, timeout, force))

    async def signal(self, session: str, signum: int) -> None:
        await self._call(calls.signal(session, signum))

    async def wait(self, session: str) -> p.Exited:
        """On a connection of its own (this one stays free for other tasks' requests)."""
        async with open_async_client(self.path, autostart=False) as other:
            return await other._call(calls.wait(session))

    async def prune(self) -> tuple[str, ...]:
        return await self._call(calls.prune())

    @contextlib.asynccontextmanager
    async def events(
        self, session: str | None = None
    ) -> AsyncIterator[AsyncIterator[p.SessionEvent | p.ApprovalEvent]]:
        """Session lifecycle and approval events, on a connection of their own::

            async with client.events() as events:
                async for event in events:
                    ...
        """
        async with open_async_client(self.path, autostart=False) as other:
            subscribe = calls.subscribe(session)
            subscribe.result(await other._ask(subscribe.request))

            async def iterate() -> AsyncIterator[p.SessionEvent | p.ApprovalEvent]:
                while True:
                    reply = check(await other._receive())
                    if isinstance(reply, p.SessionEvent | p.ApprovalEvent):
                        yield reply
                    elif isinstance(reply, p.EndOfOutput):
                        return
                    else:
                        raise UnexpectedReply(f"unexpected `{_tag(reply)}` in an event stream")

            yield iterate()


@contextlib.asynccontextmanager
async def open_async_client(
    path: StrPath | None = None, *, system: bool = False, autostart: bool = True
) -> AsyncIterator[AsyncClient]:
    """Connect (starting a user daemon if allowed and needed) and exchange ``hello``."""
    import trio
    from trio_websocket import wrap_client_stream

    target = client_socket_path(system=system) if path is None else plain_path(path)

    async def open_stream() -> trio.SocketStream:
        sock = await trio.to_thread.run_sync(connect_trusted, target, CONNECT_TIMEOUT)
        sock.settimeout(None)
        return trio.SocketStream(trio.socket.from_stdlib_socket(sock))

    try:
        stream = await open_stream()
    except DaemonUnreachable as exc:
        may_start = (autostart and not system and os.environ.get("NONO_NO_AUTOSTART") != "1"
                     and exc.errno in (errno.ENOENT, errno.ECONNREFUSED))
        if not may_start:
            raise
        explicit = path is not None or bool(os.environ.get("NONO_SOCKET"))
        await trio.to_thread.run_sync(start_daemon, target if explicit else None)
        stream = await open_stream()
    async with trio.open_nursery() as nursery:

        async def reopen() -> WebSocketConnection:
            return await wrap_client_stream(nursery, await open_stream(), "localhost",
                                            p.WS_RESOURCE, subprotocols=[p.WS_SUBPROTOCOL])

        ws = await wrap_client_stream(nursery, stream, "localhost", p.WS_RESOURCE,
                                      subprotocols=[p.WS_SUBPROTOCOL])
        client = AsyncClient(ws, target, reopen)
        try:
            await client._hello()
            yield client
        finally:
            with trio.move_on_after(1, shield=True):
                await client._ws.aclose()
            nursery.cancel_scope.cancel()
