"""Signing: file bytes in, nono bundle bytes out.

``file bytes -> SHA-256 -> in-toto statement (subject = base name + digest, keyed signer) ->
DSSE PAE -> ECDSA P-256 signature -> Sigstore bundle v0.3 JSON``. The daemon signs with keys
from its key store; nothing here reads a key or writes a file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence

from ._bundle import (
    IN_TOTO_PAYLOAD_TYPE,
    INSTRUCTION_PREDICATE_TYPE,
    MAX_SUBJECTS,
    POLICY_PREDICATE_TYPE,
    check_base_name,
    check_subject_path,
    encode_bundle,
    encode_multi_statement,
    encode_statement,
    pae,
)
from ._errors import SubjectMismatch, TrustError
from ._keys import SigningKey
from ._policy import POLICY_FILE_NAME, parse_policy

Source = bytes | str | os.PathLike[str]
_HEX64 = re.compile(r"[0-9a-f]{64}")


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


def sign_subjects(subjects: Sequence[tuple[str, str]], key: SigningKey) -> bytes:
    """nono's multi-subject bundle (``.nono-trust.bundle``) over ``(path, sha256)`` pairs.

    Each path is relative to the directory the bundle will sit in (written in its canonical
    form: no ``./``, no ``//``), each digest lower-case hex SHA-256; 1 to 1,000 subjects,
    no path twice. One signature covers them all. Raises :class:`TrustError` (or
    :class:`SubjectMismatch` for a path that cannot be a subject) and signs nothing then.
    """
    if not subjects:
        raise TrustError("a multi-subject bundle needs at least one file")
    if len(subjects) > MAX_SUBJECTS:
        raise TrustError(f"too many files for one bundle: {len(subjects)}, the limit is "
                         f"{MAX_SUBJECTS}")
    canonical: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, sha256 in subjects:
        try:
            path = check_subject_path(name)
        except ValueError as exc:
            raise SubjectMismatch(f"cannot sign {name[:80]!r} as a subject: {exc}",
                                  name=name) from None
        if path in seen:
            raise SubjectMismatch(f"{path[:80]!r} is named twice", name=name)
        if not _HEX64.fullmatch(sha256):
            raise TrustError(f"the digest of {path[:80]!r} is not lower-case hex SHA-256")
        seen.add(path)
        canonical.append((path, sha256))
    payload = encode_multi_statement(subjects=canonical, key_id=key.key_id)
    signature = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    return encode_bundle(hint=key.fingerprint, payload=payload, signature=signature)


def sign_files(files: Sequence[tuple[str, bytes]], key: SigningKey) -> bytes:
    """:func:`sign_subjects` over ``(relative path, file bytes)`` pairs."""
    return sign_subjects([(name, hashlib.sha256(data).hexdigest()) for name, data in files],
                         key)
