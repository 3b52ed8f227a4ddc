"""One session's asker: the callback its proxy awaits for an unlisted destination.

It opens a :class:`Pending` with what is known (session, host, port, method and path, the
session's program, time), records ``approval`` ``requested``, puts the question to the
profile's backend (the daemon's queue, a webhook, or a chain of them), and records
``decided`` with the decider and the latency. Whatever goes wrong, or no answer before the
deadline, is a denial.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shlex
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, final

import structlog
import trio

from .._cancelled import one_cancelled
from ..audit import Approval, AuditError, redact_argv
from ..policy import ApprovalBackend, ApprovalPolicy
from ..proxy import ApprovalAsk, Verdict
from ._errors import ApprovalLimit
from ._peer import find_client
from ._queue import ApprovalQueue, Pending

log = structlog.get_logger()

#: A backend's say: the verdict and who gave it.
Said = tuple[Verdict, str]
#: How a webhook backend is asked (``_webhook.WebhookCaller``); None: no webhooks here.
AskWebhook = Callable[[ApprovalBackend, Pending, float], Awaitable[Said]]
#: Questions one session may have open at once, whatever the backend. A program flooding
#: unlisted hosts has the rest refused at once (decider ``limit``): no backend hears of them,
#: so it can neither bury its owner's queue nor make the daemon call a webhook without bound.
MAX_OPEN_PER_SESSION: Final = 16


@final
class SessionFacts:
    """What an approval says about the session that asked."""

    def __init__(self, *, session_id: str, name: str, owner_uid: int, pid: int,
                 command: Sequence[str], profile: str | None,
                 hidden: Sequence[str] = ()) -> None:
        self.session_id = session_id
        self.name = name
        self.owner_uid = owner_uid
        self.pid = pid
        self.command = tuple(command)
        self.profile = profile
        #: Values the session holds that no command line on record may show (its tokens).
        self.hidden = tuple(hidden)


@final
class SessionAsker:
    """``await asker(ask)`` -> Verdict, for :func:`nonod.proxy.serve_proxy`'s ``asker``."""

    def __init__(self, *, queue: ApprovalQueue, policy: ApprovalPolicy, timeout: float,
                 facts: SessionFacts, record: Callable[[Approval], None],
                 webhook: AskWebhook | None = None) -> None:
        self._queue = queue
        self._policy = policy
        self._timeout = policy.timeout_secs or timeout
        self._facts = facts
        self._record = record
        self._webhook = webhook
        self._open = 0
        # The session's own threads for finding which process asked: its questions never
        # take the daemon's shared worker threads (40, for every session's file reads).
        self._lookups = trio.CapacityLimiter(2)

    async def __call__(self, ask: ApprovalAsk) -> Verdict:
        facts = self._facts
        pid, command = facts.pid, facts.command
        if self._open >= MAX_OPEN_PER_SESSION:
            return self._over_limit(mode=ask.mode, host=ask.host, port=ask.port,
                                    method=ask.method, path=ask.path, pid=pid,
                                    command=command)
        self._open += 1
        try:
            found = await trio.to_thread.run_sync(find_client, facts.pid, ask.client_port,
                                                  abandon_on_cancel=True,
                                                  limiter=self._lookups)
            if found is not None:  # the very process that asked, if it can be told
                pid, command = found[0], redact_argv(found[1], facts.hidden)
            return await self._held(self._pending(
                mode=ask.mode, host=ask.host, port=ask.port, method=ask.method,
                path=ask.path, pid=pid, command=command))
        finally:
            self._open -= 1

    async def ask_tool(self, tool: str, argv: Sequence[str], *, pid: int,
                       timeout: float | None = None) -> Verdict:
        """A call of a tool whose ``invocation_policy`` says ``approve``
        (``nonod.toolsandbox``): mode ``tool``, the tool's name as ``host``, its arguments
        (redacted) as ``path``, each quoted as a shell would need it, so that the words the
        person reads are the tool's arguments (``-f 'body=x -X GET'`` is one argument, not
        an option the call lacks); ``pid`` is the caller (the shim)."""
        command = redact_argv((tool, *argv), self._facts.hidden)
        fields: dict[str, Any] = {"mode": "tool", "host": tool, "port": 0, "method": "",
                                  "path": shlex.join(command[1:]), "pid": pid,
                                  "command": command}
        if self._open >= MAX_OPEN_PER_SESSION:
            return self._over_limit(**fields)
        self._open += 1
        try:
            return await self._held(self._pending(**fields, timeout=timeout))
        finally:
            self._open -= 1

    def _over_limit(self, **fields: Any) -> Verdict:
        """Too many questions open for this session: refused at once, on record."""
        pending = self._pending(**fields)
        self._record(self._event(pending, "requested"))
        self._decided(pending, trio.current_time(), "deny", "limit")
        return "deny"

    def _pending(self, *, mode: str, host: str, port: int, method: str, path: str, pid: int,
                 command: tuple[str, ...], timeout: float | None = None) -> Pending:
        facts = self._facts
        now = dt.datetime.now(dt.UTC)
        backend = self._policy.named(self._policy.backend)
        wait = self._timeout if timeout is None else timeout
        return Pending(
            id=self._queue.new_id(), session_id=facts.session_id, session_name=facts.name,
            owner_uid=facts.owner_uid, mode=mode, host=host, port=port,
            method=method, path=path, pid=pid, command=command,
            backend=backend.name, created=now,
            expires=now + dt.timedelta(seconds=wait), profile=facts.profile)

    async def _held(self, pending: Pending) -> Verdict:
        """Put the question to the backend, on record; no answer by the deadline denies."""
        backend = self._policy.named(self._policy.backend)
        started = trio.current_time()
        wait = (pending.expires - pending.created).total_seconds()
        self._record(self._event(pending, "requested"))
        verdict: Verdict = "timeout"
        decider = "timeout"
        try:
            # A chain's members wait in a nursery: the session's end leaves it as a group
            # of cancellations, let out as the one Cancelled recorded below.
            with one_cancelled(), trio.move_on_at(started + wait):
                try:
                    verdict, decider = await self._ask(backend, pending, started + wait)
                except ApprovalLimit as exc:  # the queue is full for this user (or all)
                    log.warning("approval refused: queue full", problem=exc.message)
                    verdict, decider = "deny", "limit"
                except Exception:  # a failing backend denies; it never lets a request through
                    log.exception("approval backend failed", backend=backend.name)
                    verdict, decider = "deny", f"error:{backend.name}"
        except trio.Cancelled:  # the session is ending (or the proxy gave up): on record too
            with contextlib.suppress(AuditError):
                self._decided(pending, started, "deny", "cancelled")
            raise
        self._decided(pending, started, verdict, decider)
        return verdict

    def _decided(self, pending: Pending, started: float, verdict: Verdict,
                 decider: str) -> None:
        elapsed = (trio.current_time() - started) * 1000
        self._record(self._event(pending, "decided", decision=verdict, decider=decider,
                                 latency_ms=round(elapsed, 3), saved_to=pending.saved_to))

    def _event(self, pending: Pending, stage: str, **decided: object) -> Approval:
        return Approval(
            id=pending.id, stage=stage,  # type: ignore[arg-type]
            host=pending.host, port=pending.port, mode=pending.mode, method=pending.method,
            path=pending.path, backend=pending.backend, pid=pending.pid,
            command=pending.command, **decided)  # type: ignore[arg-type]

    async def _ask(self, backend: ApprovalBackend, pending: Pending, deadline: float) -> Said:
        match backend.type:
            case "queue":
                return await self._ask_queue(pending)
            case "webhook":
                if self._webhook is None:
                    return "deny", f"webhook:{backend.name}:unavailable"
                limit = deadline if backend.timeout_secs is None else min(
                    deadline, trio.current_time() + backend.timeout_secs)
                with trio.move_on_at(limit):
                    return await self._webhook(backend, pending, limit)
                return "timeout", f"webhook:{backend.name}:timeout"
            case "chain":
                members = [self._policy.named(m) for m in backend.members]
                return await self._ask_chain(backend, members, pending, deadline)
        return "deny", f"unknown:{backend.type}"

    async def _ask_queue(self, pending: Pending) -> Said:
        self._queue.add(pending)
        try:
            await pending.answered.wait()
        finally:
            self._queue.remove(pending)
        return pending.answer or "deny", pending.decider

    async def _ask_chain(self, chain: ApprovalBackend, members: Sequence[ApprovalBackend],
                         pending: Pending, deadline: float) -> Said:
        """``any``: the first allow wins, refused only when every member refused; ``all``:
        the first refusal wins, allowed (for the narrowest scope said) when all allowed."""
        said: list[Said] = []
        decisive: list[Said] = []
        async with trio.open_nursery() as nursery:
            async def one(member: ApprovalBackend) -> None:
                verdict, who = await self._ask(member, pending, deadline)
                said.append((verdict, who))
                allows = verdict in ("once", "session")
                if allows == (chain.mode == "any"):
                    decisive.append((verdict, who))
                    nursery.cancel_scope.cancel()

            for member in members:
                nursery.start_soon(one, member)
        name = f"chain:{chain.name}"
        if decisive:
            verdict, who = decisive[0]
            return verdict, f"{name}:{who}"
        if chain.mode == "any":
            return "deny", f"{name}:" + ",".join(w for _, w in said)
        scope: Verdict = "once" if any(v == "once" for v, _ in said) else "session"
        return scope, f"{name}:" + ",".join(w for _, w in said)
