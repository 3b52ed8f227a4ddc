"""The secret and trust handlers (``nonoctl secret``, ``nonoctl trust``): the system daemon's
keys are root's alone; the work is the injected ``SecretStore``/``TrustService``'s, so this
module imports neither ``credentials`` nor ``trust``. What was done is logged, never a value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never

import structlog
import trio

from .. import protocol as p
from .. import sessions
from ._contracts import SecretStore, TrustService
from ._errors import Forbidden

if TYPE_CHECKING:
    from ..credentials._hosts import SecretHosts

log = structlog.get_logger()


def require_root_on_system(caller: sessions.Caller, system: bool, what: str, hint: str) -> None:
    """The system daemon's own keys and secrets are root's alone."""
    if system and not caller.is_root:
        raise Forbidden(f"only root may {what}", hint=hint)


async def handle_secret(
    secrets: SecretStore,
    request: p.SecretSet | p.SecretList | p.SecretDelete | p.SecretTest,
    caller: sessions.Caller,
    *,
    system: bool,
) -> p.AnyReply:
    """The daemon's keychain (``SecretStore``). No value is ever logged or sent back;
    errors are ``credential.*``."""
    require_root_on_system(
        caller, system, "manage the system daemon's secrets",
        "store your own secrets in your user daemon (`nonoctl secret ...` without --system)",
    )
    match request:
        case p.SecretSet(name=name):
            stored = await secrets.store(name, request.value)
            log.info("secret stored", name=name, uid=caller.uid)
            return stored
        case p.SecretDelete(name=name):
            deleted = await secrets.delete(name)
            log.info("secret deleted", name=name, uid=caller.uid)
            return deleted
        case p.SecretTest(name=name):
            return await secrets.test(name)
        case p.SecretList():
            return await secrets.list()
        case _:
            assert_never(request)

async def handle_secret_bindings(hosts: SecretHosts, request: p.SecretBindings,
                                 caller: sessions.Caller, *, system: bool) -> p.SecretBound:
    """``nonoctl secret hosts``: each caller's own bindings on the system daemon (every user
    routes secrets of their own), the daemon's on a user daemon."""
    uid = caller.uid if system else None
    ref = request.reference
    if request.clear:
        await trio.to_thread.run_sync(hosts.clear, uid, ref)
        log.info("secret hosts cleared", reference=ref, uid=caller.uid)
    if request.add:
        bound = await trio.to_thread.run_sync(hosts.add, uid, ref, request.add)
        log.info("secret hosts added", reference=ref, hosts=list(request.add), uid=caller.uid)
        return p.SecretBound(reference=ref, hosts=bound)
    return p.SecretBound(reference=ref,
                         hosts=await trio.to_thread.run_sync(hosts.hosts, uid, ref))


async def handle_trust(
    keys: TrustService,
    request: p.TrustKeygen | p.TrustExportKey | p.TrustSign | p.TrustInit,
    caller: sessions.Caller,
    *,
    system: bool,
) -> p.AnyReply:
    """Trust keys and signing (``nonoctl trust``, through ``TrustService``). Keys never
    leave the daemon: the client sends file contents and writes the bundles and policies
    it gets back; errors are ``trust.*``."""
    require_root_on_system(
        caller, system, "use the system daemon's trust keys",
        "use your own keys in your user daemon (`nonoctl trust ...` without --system)",
    )
    match request:
        case p.TrustKeygen(key=name, force=force):
            made = await keys.keygen(name, force=force)
            log.info("trust key generated", key=name, fingerprint=made.fingerprint,
                     uid=caller.uid)
            return made
        case p.TrustExportKey(key=name, pem=pem):
            return await keys.export_key(name, pem=pem)
        case p.TrustSign(key=name):
            signed = await keys.sign(request)
            log.info("trust file signed", name=request.name, key=name,
                     policy=request.policy, subjects=len(request.subjects), uid=caller.uid)
            return signed
        case p.TrustInit(key=name, includes=includes):
            return await keys.init_policy(name, includes)
        case _:
            assert_never(request)
