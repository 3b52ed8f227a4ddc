"""The daemon's side of the tool sandbox: one socket per agent session, one child session per
tool call.

:meth:`ToolBroker.prepare` runs before the agent's program starts: it makes the session's
socket (a daemon-private host path, bound at ``/.nono-tool.sock`` in the view only) and pins
the shim over each tool's executable in the view, so whatever path, link, copy or loader
reaches those bytes in the session reaches the shim. :meth:`Tools.serve` answers calls until
the session ends. A call is one frame from the shim (``>I`` length, then JSON: tool, argv,
cwd, environment) carrying its stdin/stdout/stderr (``SCM_RIGHTS``). The calling session is
the one whose socket the call came in on. The daemon checks the tool's invocation policy,
launches the child session through the registry (audit, limits, ``ps``, ``stop`` as for any
session, with ``parent`` set), forwards the signals the shim reports and answers with the exit
status (newline-delimited JSON). When the agent's session ends, its tool sessions are stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

import msgspec
import structlog
import trio

from .. import protocol as p
from .._limits import LimitSettings, effective
from ..approvals import ApprovalQueue, SessionAsker, SessionFacts
from ..audit import AuditError, ToolEnded, ToolRefused, ToolStarted, redact_argv
from ..control._transport import check_stdio_fds
from ..errors import NonoError
from ..policy import ApprovalPolicy, Limits, ResolvedPolicy, ToolPolicy
from ..profiles._tools import InvocationPolicy
from ..sandbox import LaunchRequest
from ..sandbox._plan import BASE_ENV, sanitize_env
from ..sessions import Caller, NotRunning, Session, SessionPlan
from ..sessions._supervise import KILL_TIMEOUT
from ._calls import Call, CallError, peer_pid, receive_call, reply, signals
from ._errors import ShimCannotRun
from ._invocation import Verdict, decide

log = structlog.get_logger()

VIEW_SOCKET: Final = "/.nono-tool.sock"
#: The shim's interpreter (its ``#!`` line): the agent's view must let it run.
SHIM_INTERPRETER: Final = "/usr/bin/python3"
#: How long a call may take to arrive, and how many calls of one session may run at once.
CALL_TIMEOUT: Final = 10.0
MAX_CALLS: Final = 16
STOP_GRACE: Final = 5.0
#: The registry's launch: a tool's session starts as any other does.
Launch = Callable[[SessionPlan], Awaitable[Session]]


@functools.cache
def shim_for(tool: str) -> bytes:
    """The shim's bytes for ``tool`` (the name is written into it)."""
    text = (Path(__file__).parent / "shim.py").read_text(encoding="utf-8")  # as nonod._data
    return text.replace('TOOL = "__TOOL__"', f"TOOL = {json.dumps(tool)}").encode()


#: The limits a tool session may not exceed its agent's in (weights are shares, not caps).
CAPPED: Final = ("memory", "max_processes", "cpus", "wall_clock")


def within(policy: ResolvedPolicy, agent: Limits) -> ResolvedPolicy:
    """``policy`` (a tool's, its limits final) with each capped limit no larger than the
    agent's: running a tool is no way around the agent's own limits."""
    limits = policy.limits
    for key in CAPPED:
        ceiling = getattr(agent, key)
        mine = getattr(limits, key)
        if ceiling is not None and (mine is None or mine > ceiling):
            limits = msgspec.structs.replace(limits, **{key: ceiling})
    if limits == policy.limits:
        return policy
    return msgspec.structs.replace(
        policy, limits=limits,
        max_processes=limits.max_processes if limits.max_processes else policy.max_processes)


#: Variables that make a tool run a program, or read configuration or a repository, that
#: their value names. From the caller they pass only when ``allow_vars`` names them exactly,
#: never through a pattern (``GIT_*`` for ``GIT_AUTHOR_NAME`` must not bring
#: ``GIT_EDITOR``): the agent would choose code that runs with the tool's credentials. (The
#: launch's own filter drops the loader and interpreter ones, ``LD_*``, ``GIT_CONFIG_*``...,
#: whoever set them.)
CHOOSES_CODE: Final = (
    "*ASKPASS*", "*EDITOR*", "*PAGER*", "*BROWSER*", "*_COMMAND", "*_CMD", "*_PROGRAM",
    "SHELL", "GIT_SSH", "GIT_EXTERNAL_DIFF", "GIT_TEMPLATE_DIR", "GIT_DIR", "GIT_WORK_TREE",
    "GIT_COMMON_DIR", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_*",
    "GIT_ATTR_SOURCE", "GIT_CEILING_DIRECTORIES", "GIT_NAMESPACE", "*CONFIG*", "XDG_*",
    "*_HOME", "*_PATH", "*_DIR", "*_DIRS", "*_FILE", "*_PLUGINS*", "*_EXTENSIONS*")


def tool_env(launch: Sequence[tuple[str, str]], caller: Mapping[str, str],
             allow_vars: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The environment a tool session starts from (its policy then filters it, as any
    launch's): the agent's *launch* environment (the user's, from the client), and from the
    caller only the variables the tool's ``allow_vars`` names, never the base ones (``PATH``,
    ``HOME``...): an agent that could choose them would choose what the tool runs and which
    configuration it reads, with the tool's credentials."""
    env = dict(launch)
    for key, value in caller.items():
        if not _matches(key, allow_vars) or _matches(key, BASE_ENV):
            continue
        if _matches(key, CHOOSES_CODE) and key not in allow_vars:
            continue  # a program or configuration the caller would choose: named exactly only
        env[key] = value
    return tuple(env.items())


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _visible(path: str, plan: SessionPlan) -> bool:
    return any(path == g.path or path.startswith(g.path.rstrip("/") + "/")
               for g in plan.policy.grants if g.access.reads)


@final
class ToolBroker:
    """``sessions.ToolHook``: set on the registry by the daemon."""

    def __init__(self, launch: Launch, run_dir: Path, *,
                 limits: Callable[[], LimitSettings] = LimitSettings,
                 approvals: ApprovalQueue | None = None,
                 approval_timeout: Callable[[], float] = lambda: 60.0) -> None:
        self._launch = launch
        self._run_dir = run_dir
        self._limits = limits
        self._approvals = approvals or ApprovalQueue()
        self._approval_timeout = approval_timeout

    def prepare(self, session: Session, plan: SessionPlan) -> Tools:
        masked = [tool for tool in plan.policy.tools if _visible(tool.executable, plan)]
        interpreter = os.path.realpath(SHIM_INTERPRETER)
        if masked and not (os.access(interpreter, os.X_OK) and _visible(interpreter, plan)):
            raise ShimCannotRun(
                f"the session's tools ({', '.join(t.name for t in masked)}) run through a "
                f"shim that needs {SHIM_INTERPRETER}, which the session cannot run",
                hint="grant the system paths (the `system_read_linux` group, or /usr) to the "
                "session, or remove `command_policies`")
        self._run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        host_path = self._run_dir / f"{session.id}.sock"
        host_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(str(host_path))
            os.chmod(host_path, 0o600)
            record = session.record
            if record.uid != os.geteuid():
                os.chown(host_path, record.uid, record.gid)
            listener.listen(MAX_CALLS)
        except BaseException:
            listener.close()
            host_path.unlink(missing_ok=True)
            raise
        pins = tuple((tool.executable, shim_for(tool.name)) for tool in masked)
        request = msgspec.structs.replace(
            plan.request, pins=plan.request.pins + pins,
            binds=(*plan.request.binds, (VIEW_SOCKET, str(host_path))))
        # The bind also lets the session make AF_UNIX sockets (sandbox._plan): the shim needs one.
        return Tools(plan=dataclasses.replace(plan, request=request),
                     launch=self._launch, limits=self._limits,
                     asker=functools.partial(self._asker, session),
                     listener=listener, host_path=host_path)

    def _asker(self, session: Session) -> SessionAsker:
        """Asks about a call an ``approve`` rule holds: the daemon's own queue, the daemon's
        approval timeout unless the rule sets one; the questions and answers go on the
        agent's record."""
        record = session.record
        services = session.services
        return SessionAsker(
            queue=self._approvals, policy=ApprovalPolicy(), timeout=self._approval_timeout(),
            facts=SessionFacts(session_id=record.id, name=record.name,
                               owner_uid=record.owner_uid, pid=record.pid or 0,
                               command=record.argv, profile=record.profile,
                               hidden=tuple(services.hidden) if services is not None else ()),
            record=session.write_event)


@final
@dataclass
class Tools:
    """One agent session's tool socket and the calls running through it."""

    plan: SessionPlan
    launch: Launch
    limits: Callable[[], LimitSettings]
    asker: Callable[[], SessionAsker]
    listener: socket.socket
    host_path: Path
    #: ``(tool, rule)`` pairs a person approved for the rest of the session (for the
    #: ``default``, the rule is ``default:`` and the call's arguments).
    approved: set[tuple[str, str]] = field(default_factory=set)
    _scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _finished: trio.Event = field(default_factory=trio.Event)

    def close(self) -> None:
        self.listener.close()
        self.host_path.unlink(missing_ok=True)

    async def serve(self, session: Session) -> None:
        """Answer calls until :meth:`end`. A failure here ends the session's tool socket (the
        shim then says the tool sandbox is unavailable), never the session or the daemon."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.listener))
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._accept, session, listener, nursery)
        except Exception:
            log.exception("the tool socket failed; the session's tools are unavailable",
                          session=session.id)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
                self.host_path.unlink(missing_ok=True)
            self._finished.set()

    async def end(self) -> None:
        """The agent's program has ended: stop taking calls, stop the tool sessions still
        running (reason ``parent_ended``) and record their end, before the agent's record
        closes."""
        self._scope.cancel()
        with trio.move_on_after(STOP_GRACE + KILL_TIMEOUT + 1):
            await self._finished.wait()

    async def _accept(self, session: Session, listener: trio.SocketListener,
                      nursery: trio.Nursery) -> None:
        slots = trio.Semaphore(MAX_CALLS)  # taken before accepting: waiting calls stay queued
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except BaseException:
                slots.release()
                raise
            nursery.start_soon(self._call, session, stream, slots)

    async def _call(self, session: Session, stream: trio.SocketStream,
                    slots: trio.Semaphore) -> None:
        try:
            async with stream:
                try:
                    with trio.fail_after(CALL_TIMEOUT):
                        call = await receive_call(stream)
                except (CallError, trio.TooSlowError, OSError) as exc:
                    log.warning("tool call dropped", session=session.id, error=str(exc))
                    return
                try:
                    await self._run(session, stream, call)
                except Exception:
                    log.exception("tool call failed", session=session.id,
                                  tool=call.frame.tool)
                finally:
                    call.close()
        finally:
            slots.release()

    def _audit(self, session: Session, event: ToolStarted | ToolEnded | ToolRefused) -> None:
        try:
            session.write_event(event)
        except AuditError:
            log.exception("audit: a tool event could not be recorded", session=session.id)

    async def _refuse(self, session: Session, stream: trio.SocketStream, call: Call,
                      reason: str, rule: str, message: str) -> None:
        self._audit(session, ToolRefused(tool=call.frame.tool, reason=reason, rule=rule,
                                         argv=redact_argv(call.frame.argv)))
        log.info("tool call refused", session=session.id, tool=call.frame.tool, rule=rule)
        await reply(stream, {"refused": message})

    async def _run(self, session: Session, stream: trio.SocketStream, call: Call) -> None:
        tool = next((t for t in self.plan.policy.tools if t.name == call.frame.tool), None)
        if tool is None:
            await self._refuse(session, stream, call, "not a tool of this session", "unknown",
                               f"tool-sandbox has no tool named {call.frame.tool}")
            return
        if tool.policy is None:
            reason = "the session may not run it (from.session: deny)"
            await self._refuse(session, stream, call, reason, "from.session",
                               f"tool-sandbox denied {tool.name}: Command '{tool.name}' is "
                               f"blocked: {reason}")
            return
        policy = (msgspec.json.decode(tool.invocation, type=InvocationPolicy)
                  if tool.invocation else None)
        # `env` matchers judge the environment the tool will get, not the one the caller
        # reports: the tool's comes from the agent's launch and its own policy.
        verdict = decide(policy, call.frame.argv, self._env_of(tool, call))
        if verdict.decision == "approve":
            verdict = await self._approve(stream, tool, call, verdict)
        if not verdict.allowed:
            await self._refuse(session, stream, call, verdict.reason, verdict.rule,
                               f"tool-sandbox denied {tool.name}: Command '{tool.name}' is "
                               f"blocked: {verdict.reason}")
            return
        try:
            # As for `launch` with passed stdio: no directory from the agent's view, no
            # pidfd or other anonymous inode, reaches the tool.
            check_stdio_fds(call.fds)
            child = await self.launch(self._child_plan(session, tool, call))
        except NonoError as exc:
            await self._refuse(session, stream, call, exc.message, "launch",
                               f"tool-sandbox could not start {tool.name}: {exc.message}")
            return
        self._audit(session, ToolStarted(tool=tool.name, child=child.id,
                                         argv=redact_argv(call.frame.argv)))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_signals, stream, child, session)
                await child.wait_exited()
                nursery.cancel_scope.cancel()
        finally:
            # Also when the agent's session ended (cancelled): the tool does not outlive it.
            with trio.CancelScope(shield=True):
                child.request_stop(reason="parent_ended", grace=STOP_GRACE)
                with trio.move_on_after(STOP_GRACE + KILL_TIMEOUT):
                    await child.wait_exited()
                record = child.record
                self._audit(session, ToolEnded(tool=tool.name, child=child.id,
                                               exit_code=record.exit_code,
                                               signal=record.signal))
                with trio.move_on_after(CALL_TIMEOUT):
                    await reply(stream, {"exit": 255 if record.exit_code is None
                                         else record.exit_code, "signal": record.signal})

    async def _approve(self, stream: trio.SocketStream, tool: ToolPolicy, call: Call,
                       verdict: Verdict) -> Verdict:
        """An ``approve`` verdict, answered: a person (``nonoctl approve``, the client API)
        says ``once``/``session`` (allowed; ``session``: this rule's calls of this tool pass
        from now on) or ``deny``; no answer in time denies. A call held by the policy's
        ``default`` was matched by no rule: what the person saw is this call, so ``session``
        lets this same call (these arguments) pass again, never every call no rule names."""
        key = (tool.name, verdict.rule if verdict.rule != "default"
               else "default:" + json.dumps(list(call.frame.argv)))
        if key in self.approved:
            return Verdict(decision="allow", rule=verdict.rule, reason="approved earlier")
        answer = await self.asker().ask_tool(tool.name, call.frame.argv,
                                             pid=peer_pid(stream), timeout=verdict.timeout)
        if answer == "session":
            self.approved.add(key)
        if answer in ("once", "session"):
            return Verdict(decision="allow", rule=verdict.rule, reason=f"approved {answer}")
        said = "no answer in time" if answer == "timeout" else "a person said no"
        return Verdict(decision="deny", rule=verdict.rule,
                       reason=f"not approved ({said}): {verdict.reason}")

    def _env_of(self, tool: ToolPolicy, call: Call) -> dict[str, str]:
        """The environment the tool's program starts with (before the daemon's own proxy
        variables and phantom tokens): what its invocation rules are about."""
        if tool.policy is None:
            return {}
        env = tool_env(self.plan.request.env, call.frame.env, tool.policy.env.allow_vars)
        return dict(item.split("=", 1) for item in sanitize_env(tool.policy.env, env, ()))

    def _child_plan(self, session: Session, tool: ToolPolicy, call: Call) -> SessionPlan:
        if tool.policy is None:
            raise ValueError("a denied tool has no child session")
        parent = session.record
        me = os.geteuid()
        frame = call.frame
        cwd = tool_cwd(frame.cwd, tool.policy, parent.cwd)
        env = tool_env(self.plan.request.env, frame.env, tool.policy.env.allow_vars)
        policy = within(effective(tool.policy, p.LaunchOptions(), self.limits()),
                        self.plan.policy.limits)
        if self.plan.policy.protected_files:  # the agent's profile file: read-only here too
            policy = msgspec.structs.replace(policy, protected_files=tuple(dict.fromkeys(
                (*policy.protected_files, *self.plan.policy.protected_files))))
        return SessionPlan(
            policy=policy,
            request=LaunchRequest(
                argv=(tool.executable, *frame.argv), cwd=cwd, env=env,
                uid=parent.uid if parent.uid != me else None,
                gid=parent.gid if parent.uid != me else None),
            owner=Caller(uid=parent.owner_uid, gid=parent.owner_gid, pid=0),
            profile=f"{parent.profile or parent.name}/{tool.name}",
            name=None, detach=True, stdio="passed", passed_fds=call.fds, parent=parent.id)

    async def _forward_signals(self, stream: trio.SocketStream, child: Session,
                               session: Session) -> None:
        """The signals the shim got, to the tool; when the shim is gone (killed: nobody waits
        for the tool any more), the tool's session is stopped (``client_gone``)."""
        async for number in signals(stream):
            with contextlib.suppress(NotRunning, ValueError, OSError):
                child.send_signal(number, reason="forwarded", sender=f"session {session.id}")
        child.request_stop(reason="client_gone", grace=STOP_GRACE)


#: Directories every session gets its own instance of: the host's files below them are not
#: in a view unless granted below them.
_FRESH: Final = ("/tmp", "/var/tmp", "/dev/shm", "/dev", "/proc")


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def tool_cwd(asked: str, policy: ResolvedPolicy, fallback: str) -> str:
    """The directory a tool runs in: the one the agent's call names if, symlinks resolved,
    it is a directory the tool's view shows (under a directory grant, under no denial), else
    the agent's own. The daemon looks the path up with its own rights, so what lies outside
    the view must not change the outcome: the agent would learn what exists there."""
    if not os.path.isabs(asked):
        return fallback
    path = os.path.realpath(asked)
    covering = [g.path for g in policy.grants if not g.is_file and _inside(path, g.path)]
    fresh = next((top for top in _FRESH if _inside(path, top)), None)
    if fresh is not None:  # only a grant below it brings the host's files there
        covering = [top for top in covering if top != fresh and _inside(top, fresh)]
    if not covering:
        return fallback
    if any(_inside(path, d.path) for d in policy.denials):
        return fallback
    return path if os.path.isdir(path) else fallback
