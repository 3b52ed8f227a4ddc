"""Trust: signed instruction files, in nono's formats, verified before a session starts.

Public face (the daemon owns keys and the key store; ``nonoctl`` sends it file contents)::

    key = generate_key("default")                       # ECDSA P-256, not stored yet
    keystore_for(key.name).store(key)                   # keychain, or file:///abs/path ref
    export_public_key(key)                              # base64 DER SPKI for trust-policy.json
    policy_json = init_policy(includes=["GEMINI.md"], key=key)
    bundle = sign_file(data, "GEMINI.md", key)          # -> GEMINI.md.bundle bytes
    policy_bundle = sign_policy(policy_json, key)       # -> trust-policy.json.bundle bytes
    together = sign_files([("GEMINI.md", data), ("docs/x.md", other)], key)  # .nono-trust.bundle

    user = load_policy(user_json, user_bundle, trusted=[publisher_for_key(pub, "default")])
    project = load_policy(project_json, project_bundle, trusted=user)
    policy = merge_policies(user, project)              # or (None, project): not authoritative
    verified = verify_file(data, "GEMINI.md", bundle, policy)      # VerifiedFile or TrustError
    report = verify_tree(workdir, policy).check()       # every included file, or TrustError
    for real_path, verified in report.pins(): ...       # mount verified.data read-only there

Every failure is a :class:`TrustError` subclass with a stable code (``trust.bad_bundle``,
``trust.digest_mismatch``...). Formats and semantics are in ``docs/trust.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ._bundle import BUNDLE_MEDIA_TYPE as BUNDLE_MEDIA_TYPE
    from ._bundle import INSTRUCTION_PREDICATE_TYPE as INSTRUCTION_PREDICATE_TYPE
    from ._bundle import MAX_BUNDLE_BYTES as MAX_BUNDLE_BYTES
    from ._bundle import MAX_SUBJECTS as MAX_SUBJECTS
    from ._bundle import MULTI_SUBJECT_PREDICATE_TYPE as MULTI_SUBJECT_PREDICATE_TYPE
    from ._bundle import POLICY_PREDICATE_TYPE as POLICY_PREDICATE_TYPE
    from ._errors import BadBundle as BadBundle
    from ._errors import BadSignature as BadSignature
    from ._errors import Blocked as Blocked
    from ._errors import DigestMismatch as DigestMismatch
    from ._errors import SubjectMismatch as SubjectMismatch
    from ._errors import TooLarge as TooLarge
    from ._errors import TrustError as TrustError
    from ._errors import TrustKeyError as TrustKeyError
    from ._errors import TrustPolicyError as TrustPolicyError
    from ._errors import Unsigned as Unsigned
    from ._errors import UntrustedSigner as UntrustedSigner
    from ._files import PolicyFiles as PolicyFiles
    from ._files import load_policies as load_policies
    from ._files import read_policy_files as read_policy_files
    from ._files import self_anchored as self_anchored
    from ._files import user_policy_path as user_policy_path
    from ._keys import DEFAULT_KEY_NAME as DEFAULT_KEY_NAME
    from ._keys import FileKeyStore as FileKeyStore
    from ._keys import KeyringBackend as KeyringBackend
    from ._keys import KeyringKeyStore as KeyringKeyStore
    from ._keys import KeyStore as KeyStore
    from ._keys import PublicKey as PublicKey
    from ._keys import SigningKey as SigningKey
    from ._keys import export_public_key as export_public_key
    from ._keys import generate_key as generate_key
    from ._keys import keystore_for as keystore_for
    from ._policy import POLICY_FILE_NAME as POLICY_FILE_NAME
    from ._policy import BlockedDigest as BlockedDigest
    from ._policy import BlockedPublisher as BlockedPublisher
    from ._policy import Blocklist as Blocklist
    from ._policy import EnforcementMode as EnforcementMode
    from ._policy import Publisher as Publisher
    from ._policy import TrustPolicy as TrustPolicy
    from ._policy import init_policy as init_policy
    from ._policy import merge_policies as merge_policies
    from ._policy import parse_policy as parse_policy
    from ._policy import publisher_for_key as publisher_for_key
    from ._scan import SKIP_DIRS as SKIP_DIRS
    from ._scan import FileOutcome as FileOutcome
    from ._scan import TrustReport as TrustReport
    from ._scan import read_scanned as read_scanned
    from ._scan import verify_tree as verify_tree
    from ._sign import sign_file as sign_file
    from ._sign import sign_files as sign_files
    from ._sign import sign_policy as sign_policy
    from ._sign import sign_subjects as sign_subjects
    from ._verify import MULTI_SUBJECT_BUNDLE as MULTI_SUBJECT_BUNDLE
    from ._verify import VerifiedFile as VerifiedFile
    from ._verify import VerifiedManifest as VerifiedManifest
    from ._verify import load_policy as load_policy
    from ._verify import verify_file as verify_file
    from ._verify import verify_manifest as verify_manifest
    from ._verify import verify_subject as verify_subject
else:
    __getattr__, __dir__ = exports(__name__, {
        "_bundle": (
            "BUNDLE_MEDIA_TYPE", "INSTRUCTION_PREDICATE_TYPE", "MAX_BUNDLE_BYTES",
            "MAX_SUBJECTS", "MULTI_SUBJECT_PREDICATE_TYPE", "POLICY_PREDICATE_TYPE",
        ),
        "_errors": (
            "BadBundle", "BadSignature", "Blocked", "DigestMismatch", "SubjectMismatch",
            "TooLarge", "TrustError", "TrustKeyError", "TrustPolicyError", "Unsigned",
            "UntrustedSigner",
        ),
        "_files": (
            "PolicyFiles", "load_policies", "read_policy_files", "self_anchored",
            "user_policy_path",
        ),
        "_keys": (
            "DEFAULT_KEY_NAME", "FileKeyStore", "KeyringBackend", "KeyringKeyStore", "KeyStore",
            "PublicKey", "SigningKey", "export_public_key", "generate_key", "keystore_for",
        ),
        "_policy": (
            "POLICY_FILE_NAME", "BlockedDigest", "BlockedPublisher", "Blocklist",
            "EnforcementMode", "Publisher", "TrustPolicy", "init_policy", "merge_policies",
            "parse_policy", "publisher_for_key",
        ),
        "_scan": ("SKIP_DIRS", "FileOutcome", "TrustReport", "read_scanned", "verify_tree"),
        "_sign": ("sign_file", "sign_files", "sign_policy", "sign_subjects"),
        "_verify": (
            "MULTI_SUBJECT_BUNDLE", "VerifiedFile", "VerifiedManifest", "load_policy",
            "verify_file", "verify_manifest", "verify_subject",
        ),
    })
