"""The daemon's secrets and trust keys as the control server's handlers use them
(``control``'s ``SecretStore`` and ``TrustService``). Key store calls block (D-Bus for the
Secret Service, files), so each runs in a worker thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, final

import structlog
import trio

from . import protocol as p
from ._secretfiles import SecretFileLog, SecretPath

if TYPE_CHECKING:
    from . import trust
    from .credentials import Keychain


@final
class KeychainSecrets:
    """Secrets in a keychain (by default keyring's choice, read from the daemon's environment:
    ``DBUS_SESSION_BUS_ADDRESS`` for the Secret Service)."""

    def __init__(self, keychain: Callable[[], Keychain] | None = None) -> None:
        self._keychain = keychain

    def _open(self) -> Keychain:
        if self._keychain is not None:
            return self._keychain()
        from .credentials import Keychain

        return Keychain()

    async def store(self, name: str, value: str) -> p.SecretStored:
        from .credentials import Secret

        keychain = self._open()
        # The protocol refuses an empty value, so Secret() accepts it.
        await trio.to_thread.run_sync(keychain.set, name, Secret(value))
        return p.SecretStored(name=name, source=await trio.to_thread.run_sync(keychain.describe))

    async def delete(self, name: str) -> p.SecretStored:
        keychain = self._open()
        await trio.to_thread.run_sync(keychain.delete, name)
        return p.SecretStored(name=name, source=await trio.to_thread.run_sync(keychain.describe))

    async def test(self, name: str) -> p.SecretState:
        status = await trio.to_thread.run_sync(self._open().test, name)
        return p.SecretState(name=status.name, found=status.found, source=status.source)

    async def list(self) -> p.Secrets:
        infos = await trio.to_thread.run_sync(self._open().list)
        return p.Secrets(secrets=tuple(
            p.SecretEntry(name=i.name, source=i.source, label=i.label) for i in infos
        ))


def _key_reply(public: trust.PublicKey, key_id: str, pem: bool) -> p.TrustKey:
    from . import trust

    return p.TrustKey(key_id=key_id, fingerprint=public.fingerprint,
                      public_key=trust.export_public_key(public, pem=pem))


@final
class KeyStoreTrust:
    """Trust keys in their key stores (``trust.keystore_for``): keygen, export, sign, init.

    A ``file://`` key the daemon generates or signs with is a secret file: it goes into
    ``secret_log`` so that every later session has it masked (``_secretfiles``)."""

    def __init__(self, secret_log: SecretFileLog | None = None) -> None:
        self._secret_log = secret_log

    async def _remember(self, key_ref: str) -> None:
        if self._secret_log is None or not key_ref.startswith("file:///"):
            return
        path = key_ref.removeprefix("file://")
        log = self._secret_log
        try:
            await trio.to_thread.run_sync(log.remember, [
                SecretPath(path, "a trust signing key"),
                SecretPath(path + ".pub", "a trust signing key")])
        except OSError as exc:
            structlog.get_logger().warning("cannot record a trust key file as a secret",
                                           error=exc.strerror or str(exc))

    async def keygen(self, name: str, *, force: bool) -> p.TrustKey:
        from . import trust

        def keygen() -> trust.PublicKey:
            key = trust.generate_key(name)
            trust.keystore_for(name).store(key, force=force)
            return key.public_key

        public = await trio.to_thread.run_sync(keygen)
        await self._remember(name)
        return _key_reply(public, name, False)

    async def export_key(self, name: str, *, pem: bool) -> p.TrustKey:
        from . import trust

        def export() -> trust.PublicKey:
            return trust.keystore_for(name).load_public_key(name)

        return _key_reply(await trio.to_thread.run_sync(export), name, pem)

    async def sign(self, request: p.TrustSign) -> p.TrustSigned:
        from . import trust

        def sign() -> tuple[bytes, trust.SigningKey]:
            key = trust.keystore_for(request.key).load_signing_key(request.key)
            if request.policy:
                return trust.sign_policy(request.data, key, name=request.name), key
            if request.subjects:
                return trust.sign_subjects(
                    [(s.name, s.sha256) for s in request.subjects], key), key
            return trust.sign_file(request.data, request.name, key), key

        bundle, key = await trio.to_thread.run_sync(sign)
        await self._remember(request.key)
        return p.TrustSigned(name=request.name, bundle=bundle, key_id=key.key_id,
                             fingerprint=key.fingerprint)

    async def init_policy(self, name: str, includes: tuple[str, ...]) -> p.TrustPolicyDocument:
        from . import trust

        def init() -> bytes:
            public = trust.keystore_for(name).load_public_key(name)
            return trust.init_policy(includes=includes, key=public, key_id=name)

        return p.TrustPolicyDocument(policy=await trio.to_thread.run_sync(init))
