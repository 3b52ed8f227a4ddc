"""One control connection after the peer check and the WebSocket handshake: ``hello``, then
requests answered in order, each by its handler (the dispatch is one ``match``).

Streaming replies (``wait``, ``stop``, ``logs --follow``, ``attach``, ``subscribe``,
``audit follow``) read the client's messages while they run (``_stream_reply``): a
``signal`` is served, ``input``/``resize``/``detach`` while attached, anything else is refused.
A client that stops reading is dropped after ``send_timeout``; an idle one after
``idle_timeout``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, assert_never, final

import msgspec
import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .. import protocol as p
from .. import sessions
from .._dryrun import summarize
from .._limits import effective as effective_limits
from ..conversation import State, message_tag, next_state
from ..errors import NonoError, ResolutionChanged
from ..policy import ResolvedPolicy
from ..sandbox import LaunchRequest
from ._approvals import feed_reply, handle_approval
from ._contracts import ServerSettings
from ._convert import exited, exited_after, session_detail, session_info
from ._errors import (
    BadDescriptors,
    FileProblem,
    Forbidden,
    HelloTimeout,
    MalformedMessage,
    ProtocolError,
    UnexpectedMessage,
    UsageError,
    VersionMismatch,
    error_reply,
)
from ._keys import handle_secret, handle_secret_bindings, handle_trust, require_root_on_system
from ._program import program_path
from ._transport import UnixConnection, check_stdio_fds

_UNPRIVILEGED_PORT_START: Final = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def unprivileged_port_start() -> int:
    """The lowest port an unprivileged process may bind (1024 if the kernel does not say)."""
    try:
        with open(_UNPRIVILEGED_PORT_START, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024

if TYPE_CHECKING:
    from ._server import ControlServer

log = structlog.get_logger()

CLOSE_TIMEOUT: Final = 1.0
#: A client's pong to our keepalive ping: header, mask and our 4-byte payload.
_PONG_BYTES: Final = 10
_GOING_AWAY: Final = 1001
#: Records re-encode to the exact bytes of their stored line (the writer's encoding).
_RECORD_ENCODER: Final = msgspec.json.Encoder(order="sorted")


def _followed_end(session: sessions.Session | None) -> str:
    """How an audit follow ends: ``refused`` for a session that ended with no program ever
    started (its launch was refused, and said why to its caller), else ``complete``."""
    if session is not None and session.exited and session.record.pid is None:
        return "refused"
    return "complete"


@final
class Conversation:
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
        with self._server.timeouts.waiting(self._settings.send_timeout) as sending:
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
            self._stream.took(data)  # no longer unread bytes of this uid
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
            try:
                next_state(State.HELLO, hello)
            except UnexpectedMessage as exc:
                await self.send_error(exc)
                return
            if not isinstance(hello, p.Hello):  # for the type checker: next_state refused
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
                with self._server.timeouts.waiting(self._settings.idle_timeout) as idle:
                    request = await self.receive()
                if idle.cancelled_caught:
                    log.info("closing an idle control connection",
                             idle_timeout=self._settings.idle_timeout)
                    with trio.move_on_after(CLOSE_TIMEOUT):
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
                                request=message_tag(request))
                    await self.send_error(FileProblem.of(exc))

    async def dispatch(self, request: p.AnyRequest) -> bool:
        """Handle one request; False ends the conversation."""
        next_state(State.IDLE, request)  # the conversation's rules (``nonod.conversation``)
        reg = self._registry
        match request:
            case p.Hello() | p.Input() | p.Resize() | p.Detach():
                raise AssertionError("refused by next_state")
            case p.Launch():
                await self._launch(request)
            case p.ListSessions(all=include_exited, brief=brief):
                found = reg.visible(self.caller, include_exited=include_exited)
                infos = tuple(session_info(s.record, None if brief else s.usage(), brief=brief)
                              for s in found)
                await self.send(p.SessionList(sessions=infos))
            case p.Inspect(session=ref):
                await self.send(p.SessionReply(session=session_detail(reg.find(ref, self.caller))))
            case p.Stop():
                await self._stop(request)
            case p.Wait(session=ref):
                session = reg.find(ref, self.caller)
                await self._reply_when_exited(session)
            case p.SendSignal():
                await self._signal(request)
            case p.Logs():
                await self._logs(request)
            case p.Attach():
                await self._attach(request)
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
                profiles = await self._server.policies.list_profiles(request, self.caller)
                await self.send(p.Profiles(profiles=profiles))
            case p.ProfileShow():
                shown = await self._server.policies.show_profile(request, self.caller)
                if request.resolved:  # the limits a launch would get here: flags, [limits]
                    policy = effective_limits(
                        msgspec.json.decode(shown.document, type=ResolvedPolicy),
                        request.options, self._server.limits())
                    shown = msgspec.structs.replace(
                        shown, document=msgspec.Raw(msgspec.json.encode(policy)))
                await self.send(shown)
            case p.ProfileValidate():
                await self.send(
                    await self._server.policies.validate_profile(request, self.caller)
                )
            case p.SecretSet() | p.SecretList() | p.SecretDelete() | p.SecretTest():
                await self.send(await handle_secret(self._server.secrets, request, self.caller,
                                                    system=self._server.info.system))
            case p.SecretBindings():
                await self.send(await handle_secret_bindings(
                    reg.secret_hosts, request, self.caller, system=self._server.info.system))
            case p.TrustKeygen() | p.TrustExportKey() | p.TrustSign() | p.TrustInit():
                await self.send(await handle_trust(self._server.trust, request, self.caller,
                                                   system=self._server.info.system))
            case p.ApprovalList() | p.ApprovalInspect() | p.ApprovalAnswer():
                await self.send(await handle_approval(reg.approvals, self.caller, request,
                                                      system=self._server.info.system))
            case _:
                assert_never(request)
        return True

    # -- streaming helper
    async def _stream_reply(
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

    async def _reply_when_exited(self, session: sessions.Session) -> None:
        """``Exited`` once the session has ended; until then the client's messages are
        served (``signal``; anything else refused) and a client that closes ends the
        conversation, as ``_stream_reply`` would, but in this task: the session's end cancels
        the wait for the next message (never the handling of one), where a reader task of
        its own was spawned, stepped and cancelled for each attached launch."""
        waiting: list[trio.CancelScope] = []

        def ended() -> None:
            for scope in waiting:
                scope.cancel()

        forget = session.when_exited(ended)
        try:
            while not session.exited:
                with trio.CancelScope() as wait:
                    waiting.append(wait)
                    try:
                        message = await self.receive()
                    finally:
                        waiting.remove(wait)
                if wait.cancelled_caught:
                    break
                if message is None:  # the client left: so does the conversation
                    self.scope.cancel()
                    await trio.lowlevel.checkpoint()
                    return
                try:
                    if not await self._refuse_in_stream(message):
                        return  # the stream ends early: no reply (``_stream_reply``'s rule)
                except NonoError as exc:
                    await self.send_error(exc)
        finally:
            forget()
        await self.send(exited(session.record))

    async def _refuse_in_stream(self, message: p.AnyRequest) -> bool:
        """While a reply streams: ``signal`` is served, anything else refused."""
        next_state(State.STREAMING, message)
        if isinstance(message, p.SendSignal):  # the only message next_state lets through
            await self._signal(message)
        return True

    # -- handlers
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
            grace = self._registry.limits().stop_grace
        session.request_stop(reason="stopped", grace=grace)
        await self._reply_when_exited(session)

    def _check_listen_ports(self, policy: ResolvedPolicy) -> None:
        """The system daemon binds a session's ``listen_ports`` on the host as root: a port
        below ``ip_unprivileged_port_start`` is root's to give, never another user's."""
        if not self._server.info.system or self.caller.is_root:
            return
        floor = unprivileged_port_start()
        low = sorted(port for port in policy.network.listen_ports if port < floor)
        if low:
            require_root_on_system(
                self.caller, True,
                f"forward privileged host ports ({', '.join(map(str, low))}; below {floor})",
                f"use a port of {floor} or above")

    async def _launch(self, request: p.Launch) -> None:
        # The session's supervision waits for this before its OOM watch and its "started"
        # log line and event: the reply goes out first (``Registry.launch(replied=)``).
        replied = trio.Event()
        try:
            await self._launch_and_reply(request, replied)
        finally:
            replied.set()

    async def _launch_and_reply(self, request: p.Launch, replied: trio.Event) -> None:
        shares = self._server.launch_shares
        async with (contextlib.nullcontext() if shares is None
                    else shares.turn(self.caller.uid)):
            session = await self._start_session(request, replied)
        if session is None:
            return  # a dry run, answered
        if request.detach:
            await self.send(p.Launched(session=session_detail(session, live_usage=False)))
            replied.set()
            self._registry.launch_answered()
            return
        try:
            await self.send(p.Launched(session=session_detail(session, live_usage=False)))
            replied.set()
            await self._reply_when_exited(session)
            self._registry.launch_answered()
        finally:
            if session.live:
                log.info("attached client went away; stopping its session", session=session.id)
                session.request_stop(reason="client_gone", grace=self._registry.limits().stop_grace)

    async def _start_session(self, request: p.Launch, replied: trio.Event | None = None
                             ) -> sessions.Session | None:
        """The session ``request`` asks for, launched; None for a dry run (answered here).
        On the system daemon it runs in one of the caller's launch turns (``_limits``).

        A kept resolution of its profile is used before its check is done (the check runs
        while the launch is prepared, and the launch's gate waits for it). Found stale, the
        launch is refused before anything of it ran (``ResolutionChanged``) and redone here
        once, on a resolution made afresh (checked before the launch is prepared)."""
        fds: tuple[int, ...] | None = None
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
                return await self._resolve_and_launch(request, fds, replied, early=True)
            except ResolutionChanged:
                log.info("the kept resolution of the launch's profile changed before its "
                         "program started; launching again on a fresh resolution")
                return await self._resolve_and_launch(request, fds, replied, early=False)
        finally:
            # The engine has its own copies by now; ours would keep the caller's terminal open.
            for fd in fds or ():
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _resolve_and_launch(self, request: p.Launch, fds: tuple[int, ...] | None,
                                  replied: trio.Event | None, *, early: bool
                                  ) -> sessions.Session | None:
        """:meth:`_start_session`'s launch, once. ``early``: a kept resolution is used
        unchecked, its check left running for the gate (``resolve_launch_early``)."""
        check: sessions.ResolutionCheck | None = None
        try:
            if request.options.audit_sign_key is not None:
                # A key the caller names is loaded with the daemon's rights: on the system
                # daemon that would sign this user's record with root's key (a file only root
                # reads, root's keychain). The configured [audit] sign_key still applies.
                require_root_on_system(
                    self.caller, self._server.info.system,
                    "choose the system daemon's audit signing key (--audit-sign-key)",
                    "the daemon's [audit] sign_key signs every session; sign with your own "
                    "key in your user daemon")
            system = self._server.info.system
            # The caller's files a launch reads are read in the profile's worker thread.
            reads = None if request.dry_run else sessions.CallerReads(
                workdir=request.cwd, env=request.env, owner=self.caller, system=system,
                trust=not request.options.trust_override,
                audit_sign_key=(request.options.audit_sign_key
                                or self._registry.audit_settings().sign_key),
                program=request.argv[0] if request.argv else None,
                masks=self._registry.secret_masks(self.caller, request.options.audit_sign_key))
            try:
                if early and reads is not None:  # a launch (a dry run prints what it checked)
                    policy, profile, check = await self._server.policies.resolve_launch_early(
                        request, self.caller, also=reads.read)
                else:
                    policy, profile = await self._server.policies.resolve_launch(
                        request, self.caller, also=reads.read if reads is not None else None)
                policy = effective_limits(policy, request.options, self._server.limits())
                self._check_listen_ports(policy)
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
            executable = None
            if system and not self.caller.is_root and argv and not request.dry_run:
                executable = (reads.program(argv[0]) if reads is not None else None) or \
                    await program_path(self.caller, policy, argv[0], request.env, request.cwd)
            launch_request = LaunchRequest(
                argv=argv,
                executable=executable,
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
                return None
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
                caller_reads=reads,
                resolution_check=check,
            )
            return await self._registry.launch(plan, replied=replied)
        finally:
            if check is not None:  # waited for by the gate, or given up on here
                check.close()

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
            await self._stream_reply(lambda: self._forward(sub), self._refuse_in_stream)
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
                next_state(State.ATTACHED, message)
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
                return True

            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keepalive)
                await self._stream_reply(produce, on_message)
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
                self._stream.consumed(_PONG_BYTES)
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
            await self._stream_reply(produce, self._refuse_in_stream)
        finally:
            feed.close()


    async def _audit_follow(self, request: p.AuditFollow) -> None:
        """Audit records as they are written (see ``protocol``: ``AuditFollow``).

        Subscribe first, then replay the file: a record written in between is in both, and
        is sent once (live records of the followed session up to the last replayed ``seq``
        are skipped). A record written after the subscription is never missed.
        """
        from ..audit import AuditNotFound, Dropped, read_lines_from

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
        # A followed session's stream ends with it: its seal ends it (published before the
        # session's record is final), and so does its end without one (a launch refused
        # before its program existed: nothing of it was announced, no seal will come). Set
        # before the first checkpoint after ``find``: an end in between is not missed.
        forget = session.when_exited(sub.end) if session is not None else None
        try:
            await self.send(p.Ok())  # subscribed: every later record will be delivered
            last_seq = 0
            ended = False
            if request.from_start and session is not None:
                # A piece of the file at a time: a replay holds one piece, however large
                # the file (up to [audit] session_max_bytes) and however slow the reader.
                offset = 0
                while True:
                    try:
                        lines, offset = await trio.to_thread.run_sync(
                            read_lines_from, reg.audit_path(session), offset)
                    except AuditNotFound:
                        lines = []
                    if not lines:
                        break
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
                await self.send(p.EndOfOutput(reason=_followed_end(session)))
                return
            followed = session.id if session is not None else None

            async def produce() -> p.AnyReply:
                while True:
                    try:
                        batch = await sub.receive_batch()
                    except trio.EndOfChannel:
                        return p.EndOfOutput(reason=_followed_end(session))
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

            await self._stream_reply(produce, self._refuse_in_stream)
        finally:
            if forget is not None:
                forget()
            sub.close()
