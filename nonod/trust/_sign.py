"""Signing: file bytes in, nono bundle bytes out.

``file bytes -> SHA-256 -> in-toto statement (subject = base name + digest, keyed signer) ->
DSSE PAE -> ECDSA P-256 signature -> Sigstore bundle v0.3 JSON``. The daemon signs with keys
from its key store; nothing here reads a key or writes a file.
"""

from __future__ import annotations

import hashlib
import os

from ._bundle import (
    IN_TOTO_PAYLOAD_TYPE,
    INSTRUCTION_PREDICATE_TYPE,
    POLICY_PREDICATE_TYPE,
    check_base_name,
    encode_bundle,
    encode_statement,
    pae,
)
from ._errors import SubjectMismatch, TrustError
from ._keys import SigningKey
from ._policy import POLICY_FILE_NAME, parse_policy

Source = bytes | str | os.PathLike[str]


def _content(source: Source, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        if name is None:
            raise TrustError("signing bytes needs the file name they will be verified as")
        return source, name
    path = os.fspath(source)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TrustError(f"cannot read {path}: {exc.strerror}") from exc
    return data, os.path.basename(path) if name is None else name


def _sign(data: bytes, name: str, key: SigningKey, predicate_type: str) -> bytes:
    try:
        check_base_name(name)
    except ValueError as exc:
        raise SubjectMismatch(f"cannot sign as {name[:80]!r}: {exc}", name=name) from None
    payload = encode_statement(
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        predicate_type=predicate_type,
        key_id=key.key_id,
    )
    signature = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    return encode_bundle(hint=key.fingerprint, payload=payload, signature=signature)


def sign_file(source: Source, name: str | None, key: SigningKey) -> bytes:
    """The ``<name>.bundle`` for a file, signed with ``key``.

    ``source`` is the file's bytes (then ``name``, its base name, is required) or a path (then
    ``name`` defaults to the path's base name). The bundle attests that name: it will verify
    only for a file of that name.
    """
    data, name = _content(source, name)
    return _sign(data, name, key, INSTRUCTION_PREDICATE_TYPE)


def sign_policy(source: Source, key: SigningKey, *, name: str = POLICY_FILE_NAME) -> bytes:
    """The ``trust-policy.json.bundle`` for a policy, after checking the policy parses."""
    data, name = _content(source, name)
    parse_policy(data, source=name)
    return _sign(data, name, key, POLICY_PREDICATE_TYPE)
