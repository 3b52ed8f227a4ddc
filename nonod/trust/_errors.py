"""The trust errors: one base, one subclass per way a file can fail verification.

Every class says in its docstring who is at fault, so that the daemon can word its refusal and
``nonoctl`` can map the code to an exit status. Messages name the file (its base name) and what
was wrong with it; they never contain key material.
"""

from __future__ import annotations

from ..errors import NonoError


class TrustError(NonoError):
    """A file, bundle, key or policy did not pass the trust checks.

    ``name`` is the base name of the file concerned, when there is one. Raised as is (code
    ``trust.failed``) for a whole scan that refused a launch; the subclasses name one cause.
    """

    code = "trust.failed"

    def __init__(self, message: str, *, name: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.name = name


class BadBundle(TrustError):
    """The ``.bundle`` sidecar is not a well-formed nono bundle: truncated or corrupt JSON, a
    wrong media or payload type, bad base64, an oversized file, a malformed statement. The
    bundle's author (or whoever modified it) is at fault; it may have been tampered with."""

    code = "trust.bad_bundle"


class SubjectMismatch(TrustError):
    """The bundle attests a different file name than the one being verified (a bundle renamed
    into place for another file), or its subject name contains a path separator."""

    code = "trust.subject_mismatch"


class DigestMismatch(TrustError):
    """The file's SHA-256 differs from the one the signer attested: the file was modified after
    signing."""

    code = "trust.digest_mismatch"


class UntrustedSigner(TrustError):
    """The bundle is signed, but by a key that no publisher of the trust policy vouches for."""

    code = "trust.untrusted_signer"


class BadSignature(TrustError):
    """The signature does not verify with the trusted publisher's key: the signed statement was
    changed, or the signature was made over other bytes."""

    code = "trust.bad_signature"


class Blocked(TrustError):
    """The file's digest, or its signer, is on the policy's blocklist. This refuses the file in
    every enforcement mode, ``warn`` and ``audit`` included."""

    code = "trust.blocked"


class Unsigned(TrustError):
    """A file the policy includes has no ``.bundle`` sidecar."""

    code = "trust.unsigned"


class TooLarge(TrustError):
    """A file the policy includes is larger than what is left of the scan's bound on verified
    bytes (``_scan.MAX_VERIFIED_BYTES``): it could not be pinned, so it is not read."""

    code = "trust.too_large"


class TrustPolicyError(TrustError):
    """A trust policy is malformed, unsigned, signed by a key nobody trusts, or unusable (no
    publisher to trust). The policy's author or the caller is at fault, not a checked file."""

    code = "trust.policy"


class TrustKeyError(TrustError):
    """A signing key could not be created, stored or loaded (missing key, unreadable key file,
    file permissions too open, keychain unavailable). Never carries key material."""

    code = "trust.key"
