"""The control server: WebSocket connections over the daemon's Unix socket.

Shape (as trio's ``serve_listeners``): one accept loop; each accepted socket goes to a handler
task that owns it and closes it in ``finally``. ``EMFILE``/``ENFILE``/``ENOBUFS``/``ENOMEM`` on
accept are logged and retried after a pause; other accept errors propagate.

Each connection, in order:

1. **Who is it?** ``SO_PEERCRED`` gives the peer's pid, uid and gid. A user daemon serves only
   its own uid; a system daemon serves root and members of its ``socket_group``. A peer whose
   user, mount, network or pid namespace is neither the daemon's nor the host's (pid 1's):
   a program inside a session, a container, is refused even with the right uid.
   ``SO_PEERPIDFD`` pins the peer process while its ``/proc`` entries are read, so a recycled
   pid cannot pass for it.
2. **WebSocket handshake** (trio-websocket) and ``Hello``/``Welcome`` within
   ``handshake_timeout``. A refused peer still gets a typed ``ErrorReply`` before the close.
   So does one over ``max_connections`` or ``max_connections_per_uid`` (``_limits``).
3. **Requests**, answered in order (see ``protocol`` for the streaming ones). Malformed,
   unknown or ill-typed messages get an ``ErrorReply`` and the connection stays usable; a
   message over ``max_message_bytes`` closes it with code 1009. A connection with no request
   for ``idle_timeout`` is closed (code 1001), and one that does not take a message within
   ``send_timeout`` is dropped: a client that stops reading holds at most the socket's buffer
   and one message, and releases what it holds (an attached session) with its connection.

The per-connection handler is one of the two places in the daemon that catch ``Exception``:
a bug triggered by one client ends that client's connection (with an ``internal`` error reply)
and nothing else.
"""

from __future__ import annotations

import array
import contextlib
import datetime as dt
import errno
import functools
import itertools
import os
import signal
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, assert_never, final

import msgspec
import structlog
import trio
from structlog.contextvars import bound_contextvars
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from .. import protocol as p
from .. import sessions
from .._dryrun import summarize
from .._limits import LimitSettings
from .._limits import effective as effective_limits
from ..errors import LaunchError, NonoError, ProfileError
from ..policy import ResolvedPolicy
from ..sandbox import LaunchRequest
from ._approvals import feed_reply, handle_approval
from ._convert import exited_after, session_detail, session_info
from ._limits import REFUSAL_SLOTS, REFUSAL_TIMEOUT, ConnectionCounter, TooManyConnections

if TYPE_CHECKING:
    from ..credentials import Keychain

log = structlog.get_logger()

_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_PAUSE: Final = 0.1
_NAMESPACES: Final = ("user", "mnt", "net", "pid")
_SO_PEERPIDFD: Final = getattr(socket, "SO_PEERPIDFD", 77)
_ANCILLARY_SPACE: Final = socket.CMSG_SPACE(p.PASSED_FDS * array.array("i").itemsize)
_CLOSE_TIMEOUT: Final = 1.0
_POLICY_VIOLATION: Final = 1008
_GOING_AWAY: Final = 1001
#: Records re-encode to the exact bytes of their stored line (the writer's encoding).
_RECORD_ENCODER: Final = msgspec.json.Encoder(order="sorted")


# --------------------------------------------------------------------------------- errors


class ProtocolError(NonoError):
    """The client broke the protocol (bad message, wrong moment, bad descriptors)."""

    code = "protocol.invalid"


class MalformedMessage(ProtocolError):
    code = "protocol.malformed"


class VersionMismatch(ProtocolError):
    code = "protocol.version"


class UnexpectedMessage(ProtocolError):
    code = "protocol.unexpected"


class BadDescriptors(ProtocolError):
    code = "protocol.fds"


class AuthRefused(NonoError):
    """The peer may not use this daemon."""

    code = "auth.refused"


class ForeignNamespace(AuthRefused):
    code = "auth.namespace"


class Forbidden(AuthRefused):
    """The peer may use the daemon, but not for this."""

    code = "auth.forbidden"


class UsageError(NonoError):
    code = "usage.invalid"


class HelloTimeout(ProtocolError):
    code = "protocol.hello_timeout"


class FileProblem(NonoError):
    """A file the request needed could not be used (a directory where a file was expected,
    no permission...). Only its name and the system's reason are told, never its content."""

    code = "file.error"

    @classmethod
    def of(cls, exc: OSError) -> FileProblem:
        name = f"{exc.filename}: " if exc.filename else ""
        return cls(f"{name}{exc.strerror or exc}")


def error_reply(exc: NonoError) -> p.ErrorReply:
    """The wire form of an error: code, message, hint, and the structured fields it has."""
    details: dict[str, str] = {}
    if isinstance(exc, LaunchError):
        if exc.step:
            details["step"] = exc.step
        if exc.errno:
            details["errno"] = str(exc.errno)
            details["errno_name"] = errno.errorcode.get(exc.errno, "")
        if exc.detail:
            details["detail"] = exc.detail
    if isinstance(exc, ProfileError):
        if exc.source:
            details["source"] = exc.source
        if exc.path:
            details["path"] = exc.path
    return p.ErrorReply(code=exc.code, message=exc.message, hint=exc.hint, details=details)


# ------------------------------------------------------------------------------ contracts


class PolicySource(Protocol):
    """Profiles, as the control server needs them (implemented over ``nonod.profiles``)."""

    async def resolve_launch(
        self, request: p.Launch, caller: sessions.Caller
    ) -> tuple[ResolvedPolicy, str | None]:
        """The policy for a launch, and the profile's name for records (None: no profile)."""
        ...

    async def list_profiles(self, caller: sessions.Caller) -> tuple[p.ProfileEntry, ...]: ...

    async def show_profile(
        self, request: p.ProfileShow, caller: sessions.Caller
    ) -> p.ProfileDocument: ...

    async def validate_profile(
        self, request: p.ProfileValidate, caller: sessions.Caller
    ) -> p.ProfileValid: ...


@dataclass(frozen=True)
class ServerSettings:
    """The ``[daemon]`` settings the server reads for each new connection."""

    max_connections: int = 256
    max_connections_per_uid: int = 128
    max_message_bytes: int = p.MAX_MESSAGE_BYTES
    handshake_timeout: float = 5.0
    idle_timeout: float = 600.0
    send_timeout: float = 30.0
    stop_grace: float = 10.0
    #: ``[limits]``: defaults and ceilings applied to every launch (``nonod._limits``).
    limits: LimitSettings = field(default_factory=LimitSettings)


@dataclass(frozen=True)
class DaemonInfo:
    version: str
    pid: int
    uid: int
    system: bool
    socket: str
    state_dir: str
    config: str | None
    started_at: dt.datetime


# ------------------------------------------------------------------------------ transport


@final
class UnixConnection(trio.abc.HalfCloseableStream):
    """A Unix stream socket read with ``recvmsg``, keeping descriptors the peer attaches.

    Reading with plain ``recv`` would make the kernel discard (close) passed descriptors, so
    every read goes through ``recvmsg`` and any ``SCM_RIGHTS`` descriptors land in an inbox of
    at most ``PASSED_FDS``. More than that (or a truncated control message) breaks the
    connection: a well-behaved client never sends more than one launch's worth at a time.
    """

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.socket = sock
        self._stream = trio.SocketStream(sock)
        self._inbox: list[int] = []
        self._receiving = False
        self.peer_gone = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already reading this connection")
        self._receiving = True
        try:
            try:
                data, ancdata, flags, _ = await self.socket.recvmsg(
                    max_bytes or 65536, _ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC
                )
            except OSError as exc:
                self.peer_gone.set()
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("connection was closed") from exc
                raise trio.BrokenResourceError(f"connection broke: {exc}") from exc
        finally:
            self._receiving = False
        fds = _collect_fds(ancdata)
        if fds:
            self._inbox.extend(fds)
            if flags & socket.MSG_CTRUNC or len(self._inbox) > p.PASSED_FDS:
                self.discard_fds()
                self.peer_gone.set()
                raise trio.BrokenResourceError("peer sent more file descriptors than allowed")
        elif flags & socket.MSG_CTRUNC:
            self.peer_gone.set()
            raise trio.BrokenResourceError("peer sent an oversized control message")
        if not data:
            self.peer_gone.set()
        return data

    def take_fds(self, count: int) -> tuple[int, ...] | None:
        """The ``count`` oldest passed descriptors (now the caller's to close), or None."""
        if len(self._inbox) < count:
            return None
        taken, self._inbox = tuple(self._inbox[:count]), self._inbox[count:]
        return taken

    def discard_fds(self) -> None:
        for fd in self._inbox:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._inbox.clear()

    async def aclose(self) -> None:
        self.discard_fds()
        await self._stream.aclose()


def _collect_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % array.array("i").itemsize
            fds.extend(array.array("i", data[:usable]))
    return fds


def check_stdio_fds(fds: tuple[int, ...]) -> None:
    """Refuse descriptors a session must not get as its stdio.

    Terminals and other character devices, pipes, sockets and regular files are accepted.
    Directories are refused: a directory from the host's mount namespace would let the program
    walk around the masks of its own (``openat`` relative to it). So are anonymous inodes
    (pidfds, eventfds...), which are not stdio and could reach outside the session.
    """
    names = ("stdin", "stdout", "stderr")
    for index, fd in enumerate(fds):
        mode = os.fstat(fd).st_mode
        kind = stat.S_IFMT(mode)
        if kind in (stat.S_IFCHR, stat.S_IFIFO, stat.S_IFSOCK):
            continue
        if kind == stat.S_IFREG:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if target.startswith("/"):
                continue
        what = "a directory" if kind == stat.S_IFDIR else "not a terminal, pipe, socket or file"
        raise BadDescriptors(
            f"the {names[index] if index < 3 else 'extra'} descriptor passed is {what}",
            hint="only terminals, pipes, sockets and regular files can be a session's stdio",
        )


# -------------------------------------------------------------------------- peer checking


def _ns_identity(pid: int | str) -> tuple[tuple[int, int], ...]:
    out = []
    for name in _NAMESPACES:
        st = os.stat(f"/proc/{pid}/ns/{name}")
        out.append((st.st_dev, st.st_ino))
    return tuple(out)


def _peer_groups(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    return set()


@final
class PeerCheck:
    """Decides whether a connected peer may talk to this daemon at all."""

    def __init__(self, *, system: bool, group_gid: int | None) -> None:
        self._system = system
        self._group_gid = group_gid
        self._uid = os.geteuid()
        # Clients live in the daemon's namespaces, or in the host's (pid 1's) when a service
        # manager gave the daemon private ones (systemd's ProtectSystem= and friends). Sessions
        # are never in either: each gets new user/mount/pid namespaces.
        mine = _ns_identity("self")
        try:
            hosts = _ns_identity(1)
        except OSError:  # pid 1 is not ours to inspect (an unprivileged user daemon)
            hosts = mine
        self._allowed = [{a, b} for a, b in zip(mine, hosts, strict=True)]

    def identify(self, sock: socket.socket | trio.socket.SocketType) -> sessions.Caller:
        """The peer's credentials, or AuthRefused."""
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        caller = sessions.Caller(uid=uid, gid=gid, pid=pid)
        pidfd = -1
        with contextlib.suppress(OSError):
            pidfd = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
        try:
            self._check_uid(caller)
            self._check_namespaces(caller)
            if pidfd >= 0:
                try:
                    signal.pidfd_send_signal(pidfd, 0)
                except ProcessLookupError as exc:
                    raise AuthRefused("the connecting process has already exited") from exc
                except PermissionError:
                    pass  # alive; signalling needs more than existing
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return caller

    def _check_uid(self, caller: sessions.Caller) -> None:
        if caller.pid <= 0:
            raise AuthRefused("the connecting process is outside this daemon's pid namespace")
        if not self._system:
            if caller.uid != self._uid:
                raise AuthRefused(
                    f"this nonod serves uid {self._uid} only, not uid {caller.uid}",
                    hint="every user runs their own daemon; see docs/daemon.md",
                )
            return
        if caller.uid == 0:
            return
        if self._group_gid is not None:
            try:
                groups = _peer_groups(caller.pid)
            except OSError as exc:
                raise AuthRefused("cannot read the connecting process's groups") from exc
            if caller.gid == self._group_gid or self._group_gid in groups:
                return
        raise AuthRefused(
            f"uid {caller.uid} may not use the system nonod",
            hint="ask an administrator to add you to the daemon's socket_group",
        )

    def _check_namespaces(self, caller: sessions.Caller) -> None:
        try:
            theirs = _ns_identity(caller.pid)
        except OSError as exc:
            raise ForeignNamespace(
                "cannot check the namespaces of the connecting process; refusing it"
            ) from exc
        for name, allowed, other in zip(_NAMESPACES, self._allowed, theirs, strict=True):
            if other not in allowed:
                raise ForeignNamespace(
                    f"the connecting process is in another {name} namespace (inside a sandbox "
                    "session or a container); nonod does not take orders from there"
                )


# ----------------------------------------------------------------------------- connection


_conn_ids = itertools.count(1)


@final
class _Conversation:
    """One authenticated, handshaken connection: reads requests, writes replies."""

    def __init__(
        self,
        server: ControlServer,
        ws: WebSocketConnection,
        stream: UnixConnection,
        caller: sessions.Caller,
        settings: ServerSettings,
        hello_deadline: float,
    ) -> None:
        self._server = server
        self._registry = server.registry
        self._ws = ws
        self._stream = stream
        self.caller = caller
        self.scope = trio.CancelScope()
        self._settings = settings
        self._hello_deadline = hello_deadline

    # -- I/O
    async def send(self, reply: p.AnyReply) -> None:
        """Send one message. A vanished client cancels the whole conversation, and so does
        one that does not take the message within ``send_timeout`` (it stopped reading)."""
        with trio.move_on_after(self._settings.send_timeout) as sending:
            try:
                await self._ws.send_message(p.encode(reply).decode("utf-8"))
                return
            except ConnectionClosed:
                pass
        if sending.cancelled_caught:
            log.warning("client stopped reading; dropping its connection",
                        send_timeout=self._settings.send_timeout)
        self.scope.cancel()
        await trio.lowlevel.checkpoint()

    async def send_error(self, exc: NonoError) -> None:
        await self.send(error_reply(exc))

    async def receive(self) -> p.AnyRequest | None:
        """The next well-formed request; None once the client has closed the connection."""
        while True:
            try:
                data = await self._ws.get_message()
            except ConnectionClosed:
                return None
            if isinstance(data, bytes):
                await self.send_error(
                    MalformedMessage("binary frames are not used: send JSON in text frames")
                )
                continue
            try:
                return p.decode_request(data)
            except msgspec.ValidationError as exc:
                await self.send_error(ProtocolError(f"invalid message: {exc}"))
            except msgspec.DecodeError as exc:
                await self.send_error(MalformedMessage(f"not a JSON message: {exc}"))

    # -- the conversation
    async def run(self) -> None:
        with self.scope:
            with trio.move_on_at(self._hello_deadline) as waiting:
                hello = await self.receive()
            if waiting.cancelled_caught:
                await self.send_error(HelloTimeout(
                    f"no `hello` within {self._settings.handshake_timeout:g}s of connecting",
                    hint="a client sends `hello` right after the WebSocket handshake",
                ))
                return
            if hello is None:
                return
            if not isinstance(hello, p.Hello):
                await self.send_error(UnexpectedMessage("the first message must be `hello`"))
                return
            if hello.protocol != p.PROTOCOL_VERSION:
                await self.send_error(VersionMismatch(
                    f"this nonod speaks protocol {p.PROTOCOL_VERSION}, the client "
                    f"{hello.protocol}",
                    hint="use the nonoctl that came with this nonod, or restart the daemon "
                    "after upgrading (`nonoctl daemon stop`)",
                ))
                return
            info = self._server.info
            await self.send(p.Welcome(protocol=p.PROTOCOL_VERSION, daemon=info.version,
                                      pid=info.pid, uid=info.uid, system=info.system))
            while True:
                with trio.move_on_after(self._settings.idle_timeout) as idle:
                    request = await self.receive()
                if idle.cancelled_caught:
                    log.info("closing an idle control connection",
                             idle_timeout=self._settings.idle_timeout)
                    with trio.move_on_after(_CLOSE_TIMEOUT):
                        await self._ws.aclose(code=_GOING_AWAY, reason="idle timeout")
                    return
                if request is None:
                    return
                try:
                    if not await self.dispatch(request):
                        return
                except NonoError as exc:
                    await self.send_error(exc)
                except OSError as exc:
                    # A caller's bad file (a directory named trust-policy.json, an unreadable
                    # one) is that request's failure, not the connection's.
                    log.warning("request failed on a file", error=str(exc),
                                request=_tag(request))
                    await self.send_error(FileProblem.of(exc))

    async def dispatch(self, request: p.AnyRequest) -> bool:
        """Handle one request; False ends the conversation."""
        reg = self._registry
        match request:
            case p.Hello():
                raise UnexpectedMessage("`hello` was already exchanged")
            case p.Launch():
                await self._launch(request)
            case p.ListSessions(all=include_exited):
                found = reg.visible(self.caller, include_exited=include_exited)
                infos = tuple(session_info(s.record, s.usage()) for s in found)
                await self.send(p.SessionList(sessions=infos))
            case p.Inspect(session=ref):
                await self.send(p.SessionReply(session=session_detail(reg.find(ref, self.caller))))
            case p.Stop():
                await self._stop(request)
            case p.Wait(session=ref):
                session = reg.find(ref, self.caller)
                await self._until(functools.partial(exited_after, session), self._refuse_in_stream)
            case p.SendSignal():
                await self._signal(request)
            case p.Logs():
                await self._logs(request)
            case p.Attach():
                await self._attach(request)
            case p.Input() | p.Resize() | p.Detach():
                raise UnexpectedMessage(f"`{_tag(request)}` is only valid while attached")
            case p.Prune():
                await self.send(p.Pruned(sessions=tuple(await reg.prune(self.caller))))
            case p.Status():
                await self.send(self._server.status(self.caller))
            case p.Shutdown():
                if self._server.info.system and not self.caller.is_root:
                    raise Forbidden("only root may stop the system daemon")
                await self.send(p.Ok())
                log.info("shutdown requested by a client", uid=self.caller.uid,
                         pid=self.caller.pid)
                self._server.request_shutdown()
            case p.Subscribe():
                await self._subscribe(request)
            case p.AuditFollow():
                await self._audit_follow(request)
            case p.ProfileList():
                profiles = await self._server.policies.list_profiles(self.caller)
                await self.send(p.Profiles(profiles=profiles))
            case p.ProfileShow():
                shown = await self._server.policies.show_profile(request, self.caller)
                if request.resolved:  # the limits a launch would get here: flags, [limits]
                    policy = effective_limits(
                        msgspec.json.decode(shown.document, type=ResolvedPolicy),
                        request.options, self._server.settings().limits)
                    shown = msgspec.structs.replace(
                        shown, document=msgspec.Raw(msgspec.json.encode(policy)))
                await self.send(shown)
            case p.ProfileValidate():
                await self.send(
                    await self._server.policies.validate_profile(request, self.caller)
                )
            case p.SecretSet() | p.SecretList() | p.SecretDelete() | p.SecretTest():
                await self.send(await self._secret(request))
            case p.TrustKeygen() | p.TrustExportKey() | p.TrustSign() | p.TrustInit():
                await self.send(await self._trust(request))
            case p.ApprovalList() | p.ApprovalInspect() | p.ApprovalAnswer():
                await self.send(await handle_approval(reg.approvals, self.caller, request,
                                                      system=self._server.info.system))
            case _:
                assert_never(request)
        return True

    # -- streaming helper
    async def _until(
        self,
        produce: Callable[[], Awaitable[p.AnyReply | None]],
        on_message: Callable[[p.AnyRequest], Awaitable[bool]],
    ) -> None:
        """Run ``produce`` (and send what it returns) while handling client messages.

        ``on_message`` returns False to end the stream early. A closed connection ends it too.
        """
        final: p.AnyReply | None = None
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while True:
                    message = await self.receive()
                    if message is None:
                        self.scope.cancel()
                        return
                    try:
                        keep_going = await on_message(message)
                    except NonoError as exc:
                        await self.send_error(exc)
                        continue
                    if not keep_going:
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(read)
            final = await produce()
            # Stop reading *before* the final reply: once the client has it, its next message
            # is a new request, which must reach the main loop and not this stream's reader.
            nursery.cancel_scope.cancel()
        if final is not None:
            await self.send(final)

    async def _refuse_in_stream(self, message: p.AnyRequest) -> bool:
        if isinstance(message, p.SendSignal):
            await self._signal(message)
            return True
        raise UnexpectedMessage(
            f"`{_tag(message)}` cannot be sent while a reply is streaming; open another "
            "connection"
        )

    # -- handlers
    async def _secret(
        self, request: p.SecretSet | p.SecretList | p.SecretDelete | p.SecretTest
    ) -> p.AnyReply:
        """The daemon's keychain (blocking D-Bus calls, so in a worker thread). No value is
        ever logged or sent back; errors are ``credential.*``."""
        if self._server.info.system and not self.caller.is_root:
            raise Forbidden(
                "only root may manage the system daemon's secrets",
                hint="store your own secrets in your user daemon (`nonoctl secret ...` "
                "without --system)",
            )
        from ..credentials import Secret

        keychain = self._server.keychain()
        match request:
            case p.SecretSet(name=name):
                # The protocol refuses an empty value, so Secret() accepts it.
                await trio.to_thread.run_sync(keychain.set, name, Secret(request.value))
                log.info("secret stored", name=name, uid=self.caller.uid)
                return p.SecretStored(name=name, source=await trio.to_thread.run_sync(
                    keychain.describe))
            case p.SecretDelete(name=name):
                await trio.to_thread.run_sync(keychain.delete, name)
                log.info("secret deleted", name=name, uid=self.caller.uid)
                return p.SecretStored(name=name, source=await trio.to_thread.run_sync(
                    keychain.describe))
            case p.SecretTest(name=name):
                status = await trio.to_thread.run_sync(keychain.test, name)
                return p.SecretState(name=status.name, found=status.found, source=status.source)
            case p.SecretList():
                infos = await trio.to_thread.run_sync(keychain.list)
                return p.Secrets(secrets=tuple(
                    p.SecretEntry(name=i.name, source=i.source, label=i.label) for i in infos
                ))
            case _:
                assert_never(request)

    async def _trust(
        self, request: p.TrustKeygen | p.TrustExportKey | p.TrustSign | p.TrustInit
    ) -> p.AnyReply:
        """Trust keys and signing (``nonoctl trust``). Keys never leave the daemon: the client
        sends file contents and writes the bundles and policies it gets back. Key store calls
        block (keychain over D-Bus, files), so they run in a worker thread; errors are
        ``trust.*``."""
        if self._server.info.system and not self.caller.is_root:
            raise Forbidden(
                "only root may use the system daemon's trust keys",
                hint="use your own keys in your user daemon (`nonoctl trust ...` without "
                "--system)",
            )
        from .. import trust

        def key_reply(public: trust.PublicKey, key_id: str, pem: bool) -> p.TrustKey:
            return p.TrustKey(key_id=key_id, fingerprint=public.fingerprint,
                              public_key=trust.export_public_key(public, pem=pem))

        match request:
            case p.TrustKeygen(key=name, force=force):

                def keygen() -> trust.PublicKey:
                    key = trust.generate_key(name)
                    trust.keystore_for(name).store(key, force=force)
                    return key.public_key

                public = await trio.to_thread.run_sync(keygen)
                log.info("trust key generated", key=name, fingerprint=public.fingerprint,
                         uid=self.caller.uid)
                return key_reply(public, name, False)
            case p.TrustExportKey(key=name, pem=pem):

                def export() -> trust.PublicKey:
                    return trust.keystore_for(name).load_public_key(name)

                return key_reply(await trio.to_thread.run_sync(export), name, pem)
            case p.TrustSign(key=name):

                def sign() -> tuple[bytes, trust.SigningKey]:
                    key = trust.keystore_for(name).load_signing_key(name)
                    if request.policy:
                        return trust.sign_policy(request.data, key, name=request.name), key
                    return trust.sign_file(request.data, request.name, key), key

                bundle, key = await trio.to_thread.run_sync(sign)
                log.info("trust file signed", name=request.name, key=name,
                         policy=request.policy, uid=self.caller.uid)
                return p.TrustSigned(name=request.name, bundle=bundle, key_id=key.key_id,
                                     fingerprint=key.fingerprint)
            case p.TrustInit(key=name, includes=includes):

                def init() -> bytes:
                    public = trust.keystore_for(name).load_public_key(name)
                    return trust.init_policy(includes=includes, key=public, key_id=name)

                return p.TrustPolicyDocument(policy=await trio.to_thread.run_sync(init))
            case _:
                assert_never(request)

    async def _signal(self, request: p.SendSignal) -> None:
        session = self._registry.find(request.session, self.caller)
        session.send_signal(request.signal, sender=f"client uid {self.caller.uid}")
        await self.send(p.Ok())

    async def _stop(self, request: p.Stop) -> None:
        session = self._registry.find(request.session, self.caller)
        if request.force:
            grace = 0.0
        elif request.timeout is not None:
            grace = request.timeout
        else:
            grace = self._server.settings().stop_grace
        session.request_stop(reason="stopped", grace=grace)
        await self._until(functools.partial(exited_after, session), self._refuse_in_stream)

    async def _launch(self, request: p.Launch) -> None:
        fds: tuple[int, ...] | None = None
        session: sessions.Session | None = None
        try:
            if request.stdio == "passed":
                fds = self._stream.take_fds(p.PASSED_FDS)
                if fds is None:
                    raise BadDescriptors(
                        "a launch with stdio=passed must carry 3 descriptors (SCM_RIGHTS) "
                        "with its frame"
                    )
                check_stdio_fds(fds)
            try:
                policy, profile = await self._server.policies.resolve_launch(request,
                                                                             self.caller)
                policy = effective_limits(policy, request.options,
                                          self._server.settings().limits)
            except NonoError as exc:
                self._registry.launch_refused(exc)  # counted like the registry's refusals
                raise
            argv = request.argv
            if not argv and not (request.dry_run and not policy.binary):  # a dry run needs none
                if not policy.binary:
                    raise UsageError(
                        "no command: the profile names none (no `binary`), so give one "
                        "after `--`",
                    )
                argv = (policy.binary,)
            argv = (*argv, *policy.command_args)  # nono appends them to any command
            system = self._server.info.system
            launch_request = LaunchRequest(
                argv=argv,
                cwd=request.cwd,
                env=tuple(request.env.items()),
                uid=self.caller.uid if system else None,
                gid=self.caller.gid if system else None,
            )
            if request.dry_run:
                await self.send(p.DryRun(
                    argv=argv, cwd=request.cwd,
                    uid=self.caller.uid if system else os.geteuid(),
                    gid=self.caller.gid if system else os.getegid(),
                    policy=msgspec.Raw(msgspec.json.encode(policy)), summary=summarize(policy),
                ))
                return
            plan = sessions.SessionPlan(
                policy=policy,
                request=launch_request,
                owner=self.caller,
                profile=profile,
                name=request.name,
                detach=request.detach,
                stdio=request.stdio,
                passed_fds=(fds[0], fds[1], fds[2]) if fds is not None else None,
                term=request.term,
                trust_override=request.options.trust_override,
                audit_sign_key=request.options.audit_sign_key,
            )
            session = await self._registry.launch(plan)
        finally:
            # The engine has its own copies by now; ours would keep the caller's terminal open.
            for fd in fds or ():
                with contextlib.suppress(OSError):
                    os.close(fd)
        if request.detach:
            await self.send(p.Launched(session=session_detail(session)))
            return
        try:
            await self.send(p.Launched(session=session_detail(session)))
            await self._until(functools.partial(exited_after, session), self._refuse_in_stream)
        finally:
            if session.live:
                log.info("attached client went away; stopping its session", session=session.id)
                session.request_stop(reason="client_gone", grace=self._server.settings().stop_grace)

    async def _logs(self, request: p.Logs) -> None:
        session = self._registry.find(request.session, self.caller)
        sub: sessions.OutputFeed | None = None
        output = session.output
        if request.follow and session.live and output is not None:
            _, _, sub = output.subscribe()
        history = sessions.history(session.output, session.log_path, request.tail)
        try:
            async for offset, chunk in history:
                await self.send(p.Output(data=chunk, offset=offset))
            if sub is None:
                await self.send(p.EndOfOutput(reason="complete"))
                return
            await self._until(lambda: self._forward(sub), self._refuse_in_stream)
        finally:
            await history.aclose()
            if sub is not None:
                sub.close()

    async def _forward(self, sub: sessions.OutputFeed) -> p.AnyReply:
        async for offset, data in sub.channel:
            await self.send(p.Output(data=data, offset=offset))
        return p.EndOfOutput(reason="lagged" if sub.lagged else "exited")

    async def _attach(self, request: p.Attach) -> None:
        session = self._registry.find(request.session, self.caller)
        session.require_tty()
        if session.attached_by is not None:
            raise sessions.SessionBusy(
                f"another client is attached to session {session.id}",
                hint="one client at a time; the other detaches with Ctrl-] d",
            )
        output = session.output
        if output is None:
            raise sessions.NoTerminal(f"session {session.id} has no terminal")
        session.attached_by = self

        def release() -> None:
            if session.attached_by is self:
                session.attached_by = None

        ring, start, sub = output.subscribe()
        try:
            if request.term is not None:
                session.resize(request.term)
            await self.send(p.Attached(session=session.id))
            if ring:
                await self.send(p.Output(data=ring, offset=start))

            async def produce() -> p.AnyReply | None:
                reply = await self._forward(sub)
                if sub.lagged:
                    return reply
                return await exited_after(session)

            async def on_message(message: p.AnyRequest) -> bool:
                match message:
                    case p.Input(data=data):
                        await session.write_input(data)
                    case p.Resize(term=term):
                        session.resize(term)
                    case p.SendSignal():
                        await self._signal(message)
                    case p.Detach():
                        release()
                        await self.send(p.Detached())
                        return False
                    case _:
                        raise UnexpectedMessage(
                            f"`{_tag(message)}` is not valid while attached; detach first"
                        )
                return True

            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keepalive)
                await self._until(produce, on_message)
                nursery.cancel_scope.cancel()
        finally:
            release()
            sub.close()

    async def _keepalive(self) -> None:
        """Drop an attached client that stopped reading even when there is nothing to send
        (a suspended ``nonoctl attach``), so that it does not hold the session forever: a
        ping every ``send_timeout``, to be answered within ``send_timeout``."""
        interval = self._settings.send_timeout
        while True:
            await trio.sleep(interval)
            answered = False
            with trio.move_on_after(interval), contextlib.suppress(ConnectionClosed):
                await self._ws.ping()
                answered = True
            if not answered:
                log.warning("attached client does not answer pings; dropping it",
                            send_timeout=interval)
                self.scope.cancel()
                return

    async def _subscribe(self, request: p.Subscribe) -> None:
        session_id = None
        if request.session is not None:
            session_id = self._registry.find(request.session, self.caller).id
        feed = self._registry.subscribe_events(self.caller, session_id)
        await self.send(p.Ok())  # subscribed: every later event will be delivered

        async def produce() -> p.AnyReply:
            async for event in feed.channel:
                await self.send(feed_reply(event))
            return p.EndOfOutput(reason="lagged" if feed.lagged else "complete")

        try:
            await self._until(produce, self._refuse_in_stream)
        finally:
            feed.close()


    async def _audit_follow(self, request: p.AuditFollow) -> None:
        """Audit records as they are written (see ``protocol``: ``AuditFollow``).

        Subscribe first, then replay the file: a record written in between is in both, and
        is sent once (live records of the followed session up to the last replayed ``seq``
        are skipped). A record written after the subscription is never missed.
        """
        from ..audit import AuditNotFound, Dropped, read_lines

        reg = self._registry
        hub = reg.audit_hub
        if hub is None:
            raise sessions.SessionError("this nonod keeps no live audit stream")
        session = reg.find(request.session, self.caller) if request.session else None
        caller = self.caller
        sub = hub.subscribe(
            session=session.id if session is not None else None, kinds=request.kinds,
            buffer=reg.audit_settings().subscriber_buffer,
            visible=lambda sid: reg.may_see_id(caller, sid),
        )
        try:
            await self.send(p.Ok())  # subscribed: every later record will be delivered
            last_seq = 0
            ended = False
            if request.from_start and session is not None:
                try:
                    lines = await trio.to_thread.run_sync(read_lines, reg.audit_path(session))
                except AuditNotFound:
                    lines = []
                for record, raw in lines:
                    last_seq = record.seq
                    ended = record.kind == "seal"
                    if sub.kinds is None or record.kind in sub.kinds:
                        await self.send(p.AuditRecord(session=session.id,
                                                      record=msgspec.Raw(raw)))
                # Nothing more can come: sealed, or ended (or never audited) with no writer.
                ended = ended or not request.follow or (session.audit is None
                                                        and session.record.state != "starting")
            if ended:
                await self.send(p.EndOfOutput(reason="complete"))
                return
            followed = session.id if session is not None else None

            async def produce() -> p.AnyReply:
                while True:
                    try:
                        batch = await sub.receive_batch()
                    except trio.EndOfChannel:
                        return p.EndOfOutput(reason="complete")
                    for item in batch:
                        if isinstance(item, Dropped):
                            await self.send(p.AuditDropped(reason=item.reason,
                                                           buffer=item.buffer,
                                                           delivered=item.delivered))
                            return p.EndOfOutput(reason="lagged")
                        if item.session == followed and item.record.seq <= last_seq:
                            continue
                        raw = _RECORD_ENCODER.encode(item.record)
                        await self.send(p.AuditRecord(session=item.session,
                                                      record=msgspec.Raw(raw)))

            await self._until(produce, self._refuse_in_stream)
        finally:
            sub.close()


def _peer_uid(sock: trio.socket.SocketType) -> int:
    """The connecting uid (``SO_PEERCRED``); -1 if the kernel will not say (refused later)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return -1
    return int(struct.unpack("3i", raw)[1])


def _tag(message: p.AnyRequest) -> str:
    return str(type(message).__struct_config__.tag)


# --------------------------------------------------------------------------------- server


@final
class ControlServer:
    """Accepts control connections and serves each in its own task."""

    def __init__(
        self,
        *,
        registry: sessions.Registry,
        policies: PolicySource,
        info: DaemonInfo,
        settings: Callable[[], ServerSettings],
        request_shutdown: Callable[[], None],
        group_gid: int | None = None,
        launcher_state: Callable[[], str] = lambda: "not started",
        keychain: Callable[[], Keychain] | None = None,
    ) -> None:
        self.registry = registry
        self.policies = policies
        self.info = info
        self.settings = settings
        self.request_shutdown = request_shutdown
        self._launcher_state = launcher_state
        self._keychain = keychain
        self._peers = PeerCheck(system=info.system, group_gid=group_gid)
        self._counter = ConnectionCounter()
        self._refused_logged_at = -1e9
        self._refused_quiet = 0

    def status(self, caller: sessions.Caller | None = None) -> p.DaemonStatus:
        """The daemon's status; session counts are ``caller``'s own (root's: all)."""
        live, total = self.registry.statistics(caller)
        info = self.info
        return p.DaemonStatus(
            pid=info.pid, version=info.version, protocol=p.PROTOCOL_VERSION, uid=info.uid,
            system=info.system, socket=info.socket, started_at=info.started_at,
            state_dir=info.state_dir, config=info.config, sessions_live=live,
            sessions_total=total, launcher=self._launcher_state(),
        )

    def keychain(self) -> Keychain:
        """The keychain ``nonoctl secret`` manages (by default keyring's choice, read from the
        daemon's environment: ``DBUS_SESSION_BUS_ADDRESS`` for the Secret Service)."""
        if self._keychain is not None:
            return self._keychain()
        from ..credentials import Keychain

        return Keychain()

    def statistics(self) -> dict[str, int]:
        return {"active_connections": self._counter.total}

    async def serve(
        self,
        listener: socket.socket,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled."""
        sock = trio.socket.from_stdlib_socket(listener)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    conn, _ = await sock.accept()
                except OSError as exc:
                    if exc.errno in _ACCEPT_RETRY_ERRNOS:
                        log.error("accept failed; retrying", error=os.strerror(exc.errno or 0))
                        await trio.sleep(_ACCEPT_PAUSE)
                        continue
                    raise
                settings = self.settings()
                uid = _peer_uid(conn)
                refusal = self._counter.admit(uid, total_cap=settings.max_connections,
                                              per_uid_cap=settings.max_connections_per_uid)
                if refusal is None:
                    nursery.start_soon(self._run_connection, conn, uid)
                    continue
                self._quiet_warning("too many control connections; refusing a new one",
                                    reason=refusal.message)
                if self._counter.refusing >= REFUSAL_SLOTS:
                    conn.close()
                    continue
                self._counter.refusing += 1
                nursery.start_soon(self._run_refusal, conn, refusal, settings)

    async def _run_refusal(
        self, sock: trio.socket.SocketType, refusal: TooManyConnections, settings: ServerSettings
    ) -> None:
        """Tell a connection over a cap why it is refused, within REFUSAL_TIMEOUT."""
        stream = UnixConnection(sock)
        try:
            with trio.move_on_after(REFUSAL_TIMEOUT):
                async with trio.open_nursery() as ws_nursery:
                    ws = await self._handshake(ws_nursery, stream, settings)
                    if ws is not None:
                        await self._refuse(ws, refusal)
                    ws_nursery.cancel_scope.cancel()
        finally:
            self._counter.refusing -= 1
            await trio.aclose_forcefully(stream)

    def _quiet_warning(self, event: str, **fields: object) -> None:
        """Log at most one such warning per second, counting the ones left out."""
        now = trio.current_time()
        if now - self._refused_logged_at >= 1.0:
            log.warning(event, suppressed=self._refused_quiet, **fields)
            self._refused_logged_at = now
            self._refused_quiet = 0
        else:
            self._refused_quiet += 1

    async def _run_connection(self, sock: trio.socket.SocketType, uid: int) -> None:
        stream = UnixConnection(sock)
        with bound_contextvars(conn=next(_conn_ids)):
            try:
                await self._converse(stream)
            except Exception:
                # Boundary: one client's failure ends its connection and nothing else.
                log.exception("control connection failed")
            finally:
                self._counter.release(uid)
                await trio.aclose_forcefully(stream)

    async def _converse(self, stream: UnixConnection) -> None:
        refusal: AuthRefused | None = None
        caller: sessions.Caller | None = None
        try:
            caller = self._peers.identify(stream.socket)
        except AuthRefused as exc:
            refusal = exc
        except OSError as exc:
            refusal = AuthRefused(f"cannot identify the connecting process: {exc.strerror}")
        settings = self.settings()
        hello_deadline = trio.current_time() + settings.handshake_timeout
        async with trio.open_nursery() as ws_nursery:
            ws = await self._handshake(ws_nursery, stream, settings)
            if ws is None:
                ws_nursery.cancel_scope.cancel()
                return
            try:
                if refusal is not None or caller is None:
                    reason = refusal or AuthRefused("unknown peer")
                    self._quiet_warning("refused a control connection", code=reason.code,
                                        reason=reason.message)
                    await self._refuse(ws, reason)
                    return
                with bound_contextvars(peer_uid=caller.uid, peer_pid=caller.pid):
                    conversation = _Conversation(self, ws, stream, caller, settings,
                                                 hello_deadline)
                    await conversation.run()
                    with trio.move_on_after(_CLOSE_TIMEOUT):
                        await ws.aclose()
            finally:
                ws_nursery.cancel_scope.cancel()

    async def _refuse(self, ws: WebSocketConnection, reason: NonoError) -> None:
        with trio.move_on_after(_CLOSE_TIMEOUT):
            try:
                await ws.send_message(p.encode(error_reply(reason)).decode("utf-8"))
                await ws.aclose(code=_POLICY_VIOLATION, reason=reason.code)
            except ConnectionClosed:
                return

    async def _handshake(
        self, nursery: trio.Nursery, stream: UnixConnection, settings: ServerSettings
    ) -> WebSocketConnection | None:
        """The WebSocket opening handshake, or None if the peer left or was too slow."""
        result: list[WebSocketConnection] = []
        with trio.move_on_after(settings.handshake_timeout):
            async with trio.open_nursery() as race:

                async def handshake() -> None:
                    request = await wrap_server_stream(
                        nursery, stream, message_queue_size=1,
                        max_message_size=settings.max_message_bytes,
                    )
                    if request.path != p.WS_RESOURCE:
                        await request.reject(404, body=b"unknown resource\n")
                    elif p.WS_SUBPROTOCOL not in request.proposed_subprotocols:
                        await request.reject(400, body=b"subprotocol nono.v1 required\n")
                    else:
                        result.append(await request.accept(subprotocol=p.WS_SUBPROTOCOL))
                    race.cancel_scope.cancel()

                async def peer_gone() -> None:
                    await stream.peer_gone.wait()
                    race.cancel_scope.cancel()

                race.start_soon(handshake)
                race.start_soon(peer_gone)
        return result[0] if result else None

