"""A project under a signed trust policy, for the red team's trust tests."""

from __future__ import annotations

from pathlib import Path

from nonod import trust
from tests.daemon.test_trust_launch import _user_policy


def signed_project(base: Path, includes: list[str]) -> tuple[Path, Path, trust.SigningKey]:
    """``base/proj`` with a project policy including ``includes``, signed by a key a
    user-level policy in ``base/cfg/nono`` (listing no files, as usual) trusts. Returns the
    project, the ``XDG_CONFIG_HOME`` to launch with and the key that signs its files."""
    work = base / "proj"
    work.mkdir(parents=True)
    config = base / "cfg"
    keyref = f"file://{base}/keys/anchor.key"
    _user_policy(config / "nono", base / "keys", [])
    key = trust.FileKeyStore().load_signing_key(keyref)
    policy = trust.init_policy(includes=includes, key=key, key_id=keyref)
    (work / "trust-policy.json").write_bytes(policy)
    (work / "trust-policy.json.bundle").write_bytes(trust.sign_policy(policy, key))
    return work, config, key
