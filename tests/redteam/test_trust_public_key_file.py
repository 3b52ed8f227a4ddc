"""Red team, tenth pass: a file key's public half, replaced by another local user.

A `file://` key ref keeps the private key and `<path>.pub` side by side. The private key is
read only if it is the reader's own and private; the `.pub` was read whoever owned it. In a
directory another user may write (a team's key directory), that user renamed a `.pub` of
its own over the user's: `trust export-key` and `trust init` then gave the attacker's public
key as the user's, which a trust policy then trusts to sign instruction files (and the
daemon takes a `.pub` as the anchor of the user-level policy). A `.pub` that a user other
than the reader or root could have written, or replaced, is now refused. Attacked by a real
second user (``useradd``)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.daemon.localusers import local_users
from tests.daemon.test_cli import CLI


def _public_b64() -> str:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return base64.b64encode(public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def test_a_public_key_another_user_could_replace_is_refused(run: CLI, short_tmp: Path) -> None:
    team = short_tmp / "team"
    team.mkdir()
    team.chmod(0o777)  # a shared key directory, writable by every user
    ref = f"file://{team}/nono"
    made = run("trust", "keygen", "--keyref", ref)
    assert made.returncode == 0, made.stderr
    theirs = _public_b64()
    with local_users(short_tmp, 1) as (attacker,):
        subprocess.run([*attacker.prefix(), "/bin/sh", "-c",
                        'printf %s "$1" > "$2.new" && mv -f "$2.new" "$2"', "sh", theirs,
                        f"{team}/nono.pub"], check=True, capture_output=True)
        exported = run("trust", "export-key", "--key", ref)
    assert theirs not in exported.stdout  # before: the attacker's key, given as the user's
    assert exported.returncode != 0
    assert "another user" in exported.stderr, exported.stderr
