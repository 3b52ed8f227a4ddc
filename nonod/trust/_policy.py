"""``trust-policy.json``: nono's format, parsed strictly, and how user and project policies merge.

The format (nono's, key for key)::

    {
      "version": 1,
      "includes": ["GEMINI.md", ".claude/**/*.md"],
      "publishers": [{"name": "local-dev", "key_id": "default", "public_key": "<base64 SPKI>"}],
      "blocklist": {
        "digests": [{"sha256": "<hex>", "description": "...", "added": "2026-02-20"}],
        "publishers": [{"identity": "<key id>", "reason": "...", "added": "2026-02-20"}]
      },
      "enforcement": "deny"
    }

``instruction_patterns`` (nono's old name for ``includes``) is read too. ``files`` lists
instruction files by path, wherever they are (``~/.claude/skills/my-skill/SKILL.md``; ``~``
is the caller's home, a relative path is relative to the scan root), at most
:data:`MAX_FILES`; the scan verifies each as it verifies an included file (``_scan``).
Keyless publishers (``issuer``, ``repository``, ``workflow``, ``build_signer_uri``,
``ref_pattern``) parse, so nono policies that
trust a CI identity load, but they never match: nonod verifies keyed signatures only. Unlike
nono, unknown keys are errors that name their JSON path, and a keyed publisher must carry its
``public_key``.

Includes are globs matched against the path relative to the scan root, with nono's (globset's)
defaults: ``*`` and ``?`` also match ``/``, ``**/`` matches any number of directories,
``[...]``, ``{a,b}`` and ``\\`` escapes work. A pattern matches the whole relative path.

Parsing (:func:`parse_policy`) checks the format only. Whether a policy is *trusted* is decided by
``load_policy`` (its signature) and :func:`merge_policies` (which policy anchors which).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Final, Literal, final

import msgspec
from msgspec import Meta

from ._bundle import load_json
from ._errors import TrustKeyError, TrustPolicyError
from ._keys import PublicKey, SigningKey
from ._limits import MAX_POLICY_BYTES as MAX_POLICY_BYTES
from ._limits import POLICY_FILE_NAME as POLICY_FILE_NAME

POLICY_VERSION: Final = 1
MAX_INCLUDES: Final = 100
MAX_FILES: Final = 1_000
MAX_PUBLISHERS: Final = 1_000
MAX_BLOCKLIST: Final = 10_000

#: How a trust failure is handled (the policy's ``enforcement`` key); named for what it is so it
#: is not confused with the sandbox's enforcement reports (``sandbox.EnforcementReport``).
EnforcementMode = Literal["deny", "warn", "audit"]
_STRICTNESS: Final[Mapping[str, int]] = MappingProxyType({"audit": 0, "warn": 1, "deny": 2})

Sha256Hex = Annotated[str, Meta(pattern="^[0-9a-fA-F]{64}$")]

NOT_AUTHORITATIVE: Final = (
    "project trust-policy.json is not authoritative: there is no user-level trust policy to "
    "anchor it. Create one with `nonoctl trust init --user` and `nonoctl trust sign-policy --user`."
)


# --- globs ------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Glob:
    """One include pattern, compiled. ``prefix`` is its literal start, ``exact`` is true when it
    has no wildcard at all."""

    pattern: str
    regex: re.Pattern[str]
    prefix: str
    exact: bool

    def matches(self, relpath: str) -> bool:
        return self.regex.fullmatch(relpath) is not None

    def names_below(self, reldir: str) -> bool:
        """Whether the pattern's literal start names a path under directory ``reldir``."""
        return self.prefix.startswith(reldir + "/")

    def could_match_below(self, reldir: str) -> bool:
        """Whether some path under directory ``reldir`` might match (never a false "no")."""
        below = reldir + "/"
        if self.exact:  # the literal path, unescaped (``\\*`` names a file called ``*``)
            return self.prefix.startswith(below)
        return below.startswith(self.prefix) or self.prefix.startswith(below)


def _translate(pattern: str, *, in_alternate: bool = False) -> tuple[str, str, bool]:
    """Glob to regex source; also the literal prefix and whether a wildcard was seen."""
    out: list[str] = []
    prefix: list[str] = []
    wild = False
    i, n = 0, len(pattern)

    def literal(ch: str) -> None:
        out.append(re.escape(ch))
        if not wild:
            prefix.append(ch)

    while i < n:
        ch = pattern[i]
        at_start = i == 0 or pattern[i - 1] == "/"
        if pattern.startswith("**", i) and at_start and (i + 2 == n or pattern[i + 2] == "/"):
            # A whole "**" component: any number of directories (or anything, at the end).
            wild = True
            if i + 2 == n:
                out.append(".*")
                i += 2
            else:
                out.append("(?:.*/)?")
                i += 3
        elif ch == "*":
            wild = True
            out.append(".*")
            while i < n and pattern[i] == "*":
                i += 1
        elif ch == "?":
            wild = True
            out.append(".")
            i += 1
        elif ch == "[":
            end = i + 1
            if end < n and pattern[end] in "!^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 1
            if end >= n:
                raise ValueError("unclosed character class '['")
            body = pattern[i + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            escaped = "".join("\\" + c if c in "\\[]^" else c for c in body)
            out.append(f"[{'^' if negate else ''}{escaped}]")
            wild = True
            i = end + 1
        elif ch == "{":
            if in_alternate:
                raise ValueError("nested alternates '{' are not supported")
            depth_end = pattern.find("}", i)
            if depth_end < 0:
                raise ValueError("unclosed alternate '{'")
            choices = pattern[i + 1 : depth_end].split(",")
            parts = [_translate(choice, in_alternate=True)[0] for choice in choices]
            out.append("(?:" + "|".join(parts) + ")")
            wild = True
            i = depth_end + 1
        elif ch == "}" and not in_alternate:
            raise ValueError("unmatched '}'")
        elif ch == "\\":
            if i + 1 >= n:
                raise ValueError("pattern ends with a lone backslash")
            literal(pattern[i + 1])
            i += 2
        else:
            literal(ch)
            i += 1
    return "".join(out), "".join(prefix), wild


def compile_glob(pattern: str) -> Glob:
    """Compile one include pattern; ``ValueError`` says what is wrong with it."""
    if not pattern:
        raise ValueError("empty pattern")
    if len(pattern) > 1024:
        raise ValueError("pattern is longer than 1024 characters")
    if pattern.startswith("/") or "\0" in pattern:
        raise ValueError("patterns are relative to the scan root; this one is absolute")
    if ".." in pattern.split("/"):
        raise ValueError("patterns cannot leave the scan root with '..'")
    source, prefix, wild = _translate(pattern)
    try:
        regex = re.compile(source, re.DOTALL)
    except re.error as exc:  # a reversed range in a class, say
        raise ValueError(exc.msg) from None
    return Glob(pattern, regex, prefix, not wild)


# --- the format -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=MAX_PUBLISHERS)
def _public_key(text: str) -> PublicKey:
    """A publisher's key, parsed once (a scan asks for it for every file it verifies)."""
    return PublicKey.from_b64(text)


class _Base(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Policy Structs: immutable, strict about unknown keys, written back without defaults."""


@final
class Publisher(_Base, frozen=True, kw_only=True):
    """A signer the policy trusts. Keyed (``key_id`` + ``public_key``) or keyless (``issuer``...).

    ``key_id`` is matched against the bundle's ``predicate.signer.key_id``; ``public_key`` (base64
    DER SPKI) is what the signature must verify with.
    """

    name: str
    key_id: str | None = None
    public_key: str | None = None
    issuer: str | None = None
    repository: str | None = None
    workflow: str | None = None
    build_signer_uri: str | None = None
    ref_pattern: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("publisher name is empty")
        keyless = any(
            field is not None
            for field in (
                self.issuer,
                self.repository,
                self.workflow,
                self.build_signer_uri,
                self.ref_pattern,
            )
        )
        if self.key_id is not None:
            if keyless:
                raise ValueError(
                    f"publisher {self.name!r} mixes key_id with keyless fields (issuer...)"
                )
            if not self.key_id:
                raise ValueError(f"publisher {self.name!r} has an empty key_id")
            if self.public_key is None:
                raise ValueError(
                    f"keyed publisher {self.name!r} has no public_key "
                    "(put the output of `nonoctl trust export-key` there)"
                )
            try:
                PublicKey.from_b64(self.public_key)
            except TrustKeyError as exc:
                raise ValueError(f"publisher {self.name!r}: {exc.message}") from None
        elif self.public_key is not None:
            raise ValueError(f"publisher {self.name!r} has a public_key but no key_id")
        elif self.issuer is None:
            raise ValueError(
                f"publisher {self.name!r} needs key_id and public_key (keyed) or issuer (keyless)"
            )

    @property
    def keyed(self) -> bool:
        return self.key_id is not None

    def key(self) -> PublicKey:
        """The publisher's public key; only for keyed publishers (checked when parsed)."""
        if self.public_key is None:
            raise TrustPolicyError(f"publisher {self.name!r} has no public key")
        return _public_key(self.public_key)


@final
class BlockedDigest(_Base, frozen=True, kw_only=True):
    sha256: Sha256Hex
    description: str
    added: str


@final
class BlockedPublisher(_Base, frozen=True, kw_only=True):
    """A refused signer: ``identity`` is a key id (or key fingerprint); for keyless signers an
    OIDC issuer, optionally narrowed to one ``repository``."""

    identity: str
    reason: str
    added: str
    repository: str | None = None


@final
class Blocklist(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    digests: tuple[BlockedDigest, ...]
    publishers: tuple[BlockedPublisher, ...] = ()

    def __post_init__(self) -> None:
        if len(self.digests) > MAX_BLOCKLIST:
            raise ValueError(f"blocklist has more than {MAX_BLOCKLIST} digests")


class _PolicyFile(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    version: int
    includes: tuple[str, ...]
    publishers: tuple[Publisher, ...]
    blocklist: Blocklist
    enforcement: EnforcementMode
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.version != POLICY_VERSION:
            raise ValueError(
                f"unsupported trust policy version {self.version} (expected {POLICY_VERSION})"
            )
        if len(self.includes) > MAX_INCLUDES:
            raise ValueError(f"more than {MAX_INCLUDES} include patterns")
        if len(self.files) > MAX_FILES:
            raise ValueError(f"more than {MAX_FILES} files ({len(self.files)} listed)")
        for path in self.files:
            if not path or "\0" in path:
                raise ValueError(f"invalid file path {path!r}: empty or with a NUL byte")
        if len(self.publishers) > MAX_PUBLISHERS:
            raise ValueError(f"more than {MAX_PUBLISHERS} publishers")
        for pattern in self.includes:
            try:
                compile_glob(pattern)
            except ValueError as exc:
                raise ValueError(f"invalid include pattern {pattern!r}: {exc}") from None


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class TrustPolicy:
    """A trust policy: what the file says, plus what nonod learned about it.

    ``sha256`` is the digest of the bytes it was parsed from (``None`` once merged),
    ``signed_by`` the fingerprint of the key whose signature ``load_policy`` verified (``None``
    if only parsed), ``authoritative`` whether a user-level policy anchors it (set by
    :func:`merge_policies`), and ``warnings`` what the daemon should tell the user.
    """

    version: int
    includes: tuple[str, ...]
    publishers: tuple[Publisher, ...]
    blocklist: Blocklist
    enforcement: EnforcementMode
    files: tuple[str, ...] = ()
    source: str = POLICY_FILE_NAME
    sha256: str | None = None
    signed_by: str | None = None
    authoritative: bool = False
    warnings: tuple[str, ...] = ()

    def keyed_publishers(self) -> tuple[Publisher, ...]:
        return tuple(p for p in self.publishers if p.keyed)

    def globs(self) -> tuple[Glob, ...]:
        return tuple(compile_glob(pattern) for pattern in self.includes)

    def blocked_digest(self, sha256: str) -> BlockedDigest | None:
        wanted = sha256.lower()
        return next((d for d in self.blocklist.digests if d.sha256.lower() == wanted), None)

    def to_json(self) -> bytes:
        """The policy in nono's format (pretty-printed), without nonod's annotations."""
        wire = _PolicyFile(
            version=self.version,
            includes=self.includes,
            publishers=self.publishers,
            blocklist=self.blocklist,
            enforcement=self.enforcement,
            files=self.files,
        )
        return msgspec.json.format(msgspec.json.encode(wire), indent=2) + b"\n"


def publisher_for_key(key: PublicKey, key_id: str, *, name: str | None = None) -> Publisher:
    """A keyed publisher for one of the daemon's own keys (to verify the user-level policy)."""
    if not key_id:
        raise TrustPolicyError("a publisher needs a key_id")
    return Publisher(name=name or key_id, key_id=key_id, public_key=key.b64)


def parse_policy(data: bytes, *, source: str = POLICY_FILE_NAME) -> TrustPolicy:
    """Check a policy's format; say nothing about whether to trust it.

    Every problem is a :class:`TrustPolicyError` that names ``source`` and the JSON path.
    """
    if len(data) > MAX_POLICY_BYTES:
        raise TrustPolicyError(f"{source} is {len(data)} bytes; the limit is {MAX_POLICY_BYTES}")
    try:
        doc = load_json(data, source)
    except ValueError as exc:
        raise TrustPolicyError(str(exc)) from None
    if not isinstance(doc, dict):
        raise TrustPolicyError(f"{source}: a trust policy must be a JSON object")
    if "instruction_patterns" in doc:
        if "includes" in doc:
            raise TrustPolicyError(
                f"{source}: both includes and instruction_patterns (its old name) are set"
            )
        doc["includes"] = doc.pop("instruction_patterns")
    mode = doc.get("enforcement")
    if isinstance(mode, str) and mode not in _STRICTNESS:
        raise TrustPolicyError(
            f"{source}: enforcement must be deny, warn or audit, not {str(mode)[:40]!r} "
            "- at `$.enforcement`"
        )
    try:
        wire = msgspec.convert(doc, _PolicyFile)
    except msgspec.ValidationError as exc:
        raise TrustPolicyError(f"{source}: {exc}") from None
    return TrustPolicy(
        version=wire.version,
        includes=wire.includes,
        publishers=wire.publishers,
        blocklist=wire.blocklist,
        enforcement=wire.enforcement,
        files=wire.files,
        source=source,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def init_policy(
    *,
    includes: Sequence[str] = (),
    key: SigningKey | PublicKey | None = None,
    key_id: str | None = None,
    publisher_name: str | None = None,
    enforcement: EnforcementMode = "deny",
) -> bytes:
    """A new ``trust-policy.json`` as nono's ``trust init`` writes it.

    With a key, it is the one publisher (named after its key id unless ``publisher_name`` is
    given; a bare :class:`PublicKey` needs ``key_id``). A user-level policy usually has no
    includes; a project policy lists the files to verify.
    """
    publishers: list[dict[str, str]] = []
    if key is not None:
        if isinstance(key, SigningKey):
            key_id = key_id or key.key_id
            public = key.public_key
        else:
            public = key
        if not key_id:
            raise TrustPolicyError("a publisher needs a key_id")
        publishers.append(
            {"name": publisher_name or key_id, "key_id": key_id, "public_key": public.b64}
        )
    elif key_id is not None:
        raise TrustPolicyError("key_id given without a key")
    doc = {
        "version": POLICY_VERSION,
        "includes": list(includes),
        "publishers": publishers,
        "blocklist": {"digests": [], "publishers": []},
        "enforcement": enforcement,
    }
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    parse_policy(data)  # refuse to write what we could not read back
    return data


def _union(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group))


def merge_policies(user: TrustPolicy | None, project: TrustPolicy | None) -> TrustPolicy:
    """The policy a scan enforces, from the user-level policy and the project's.

    Both must come from ``load_policy`` (verified). With both, the project policy must be
    signed by a key the user policy trusts (a project cannot vouch for itself); publishers are
    the user's first, then the project's (first of a name wins), includes, ``files`` (the
    same string once, the user's first) and blocklists are unions, and enforcement is the
    strictest (``deny`` > ``warn`` > ``audit``). A project
    policy alone is used as is, marked not authoritative, with a warning.
    """
    for policy in (user, project):
        if policy is not None and policy.signed_by is None:
            raise TrustPolicyError(
                f"{policy.source} has not been verified; only signed policies can be merged",
                hint="load it with load_policy",
            )
    if user is None:
        if project is None:
            raise TrustPolicyError(
                "no trust policy: neither a user-level nor a project trust-policy.json",
                hint="create one with `nonoctl trust init`",
            )
        return dataclasses.replace(
            project, authoritative=False, warnings=(*project.warnings, NOT_AUTHORITATIVE)
        )
    if project is None:
        return dataclasses.replace(user, authoritative=True)

    anchors = {p.key().fingerprint for p in user.keyed_publishers()}
    if project.signed_by not in anchors:
        raise TrustPolicyError(
            f"{project.source} is signed by a key the user-level trust policy does not trust",
            hint="sign it with a key listed in the user policy (`nonoctl trust sign-policy`)",
        )

    publishers: dict[str, Publisher] = {}
    for publisher in (*user.publishers, *project.publishers):
        publishers.setdefault(publisher.name, publisher)
    digests: dict[str, BlockedDigest] = {}
    for entry in (*user.blocklist.digests, *project.blocklist.digests):
        digests.setdefault(entry.sha256.lower(), entry)
    blocked: dict[tuple[str, str | None], BlockedPublisher] = {}
    for bp in (*user.blocklist.publishers, *project.blocklist.publishers):
        blocked.setdefault((bp.identity, bp.repository), bp)
    strictest = max(user.enforcement, project.enforcement, key=_STRICTNESS.__getitem__)

    return TrustPolicy(
        version=max(user.version, project.version),
        includes=_union(user.includes, project.includes),
        files=_union(user.files, project.files),
        publishers=tuple(publishers.values()),
        blocklist=Blocklist(digests=tuple(digests.values()), publishers=tuple(blocked.values())),
        enforcement=strictest,
        source=f"{user.source} + {project.source}",
        signed_by=user.signed_by,
        authoritative=True,
        warnings=(*user.warnings, *project.warnings),
    )
