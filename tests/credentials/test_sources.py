"""Credential references: parsing, and every source but the keychain (test_keychain.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nonod.credentials import (
    BadReference,
    BadValue,
    CredentialNotFound,
    CredentialUnavailable,
    InsecureSource,
    Secret,
    SourceNotPermitted,
    SourceOptions,
    UnsupportedSource,
    parse_credential_ref,
    resolve_credential,
    resolve_env_credentials,
    source_kind,
)

VALUE = "sk-test-0123456789abcdefSECRET"


@pytest.mark.parametrize(("text", "kind", "fields"), [
    ("gemini", "keychain", {"service": "nono", "account": "gemini"}),
    ("google-ai", "keychain", {"service": "nono", "account": "google-ai"}),
    ("keyring://other/acct", "keychain", {"service": "other", "account": "acct"}),
    ("keyring://gh:github.com/octocat?decode=go-keyring", "keychain",
     {"service": "gh:github.com", "account": "octocat", "go_keyring": True}),
    ("env://GITHUB_TOKEN", "env", {"variable": "GITHUB_TOKEN"}),
    ("file:///run/keys/gh", "file", {"path": "/run/keys/gh"}),
    ("op://Dev/OpenAI API Key/credential", "op", {}),
    ("systemd-creds://github_token", "systemd", {"name": "github_token"}),
])
def test_references_parse(text: str, kind: str, fields: dict[str, str]) -> None:
    ref = parse_credential_ref(text)
    assert ref.kind == kind and ref.text == text
    for key, value in fields.items():
        assert getattr(ref, key) == value
    assert source_kind(text) == kind


@pytest.mark.parametrize("text", [
    "", "keyring://", "keyring://svc", "keyring://svc/", "env://", "env://1BAD", "env://A-B",
    "file://relative/path", "file:///a/../etc/shadow", "op://vault/item", "op://v//f",
    "systemd-creds://", "systemd-creds://../x", "systemd-creds://a/b", "ftp://x", "bad name",
    "line\nbreak", ".hidden", "keyring://svc/acct?decode=base64", "keyring://svc/acct?x=1",
    "keyring://svc/acct#frag",
])
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(BadReference):
        parse_credential_ref(text)


@pytest.mark.parametrize("text", ["bw://item", "apple-password://x", "apple-passwords://x"])
def test_nono_references_we_do_not_read_say_so(text: str) -> None:
    with pytest.raises(UnsupportedSource, match="not supported"):
        resolve_credential(text, environ={})


def test_env_source_reads_the_given_mapping_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAEMON_ONLY", "from-the-daemon")
    secret = resolve_credential("env://TOKEN", environ={"TOKEN": VALUE})
    assert isinstance(secret, Secret) and secret.reveal() == VALUE
    with pytest.raises(CredentialNotFound, match="DAEMON_ONLY is not set") as info:
        resolve_credential("env://DAEMON_ONLY", environ={})
    assert info.value.code == "credential.not_found"
    with pytest.raises(CredentialNotFound):
        resolve_credential("env://EMPTY", environ={"EMPTY": ""})


def write_private(path: Path, data: str, mode: int = 0o600) -> Path:
    path.write_text(data)
    path.chmod(mode)
    return path


def test_file_source_reads_a_private_file(tmp_path: Path) -> None:
    key = write_private(tmp_path / "key", VALUE + "\n")
    assert resolve_credential(f"file://{key}", environ={}).reveal() == VALUE
    key.chmod(0o400)
    assert resolve_credential(f"file://{key}", environ={}).reveal() == VALUE


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o620, 0o660, 0o666, 0o601])
def test_file_source_refuses_files_others_can_touch(tmp_path: Path, mode: int) -> None:
    key = write_private(tmp_path / "key", VALUE, mode)
    with pytest.raises(InsecureSource, match=f"mode {mode:04o}") as info:
        resolve_credential(f"file://{key}", environ={})
    message = info.value.diagnostics()
    assert VALUE not in message and "chmod 600" in message
    assert info.value.code == "credential.insecure"


def test_file_source_refuses_symlinks_fifos_and_strangers(tmp_path: Path) -> None:
    key = write_private(tmp_path / "key", VALUE)
    (tmp_path / "link").symlink_to(key)
    with pytest.raises(InsecureSource, match="symbolic link"):
        resolve_credential(f"file://{tmp_path / 'link'}", environ={})
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(InsecureSource, match="not a regular file"):
        resolve_credential(f"file://{tmp_path / 'fifo'}", environ={})
    other = SourceOptions(file_owner=os.geteuid() + 1)
    with pytest.raises(InsecureSource, match="belongs to uid"):
        resolve_credential(f"file://{key}", environ={}, options=other)
    with pytest.raises(CredentialNotFound, match="no such file"):
        resolve_credential(f"file://{tmp_path / 'missing'}", environ={})


def test_file_roots_confine_file_references(tmp_path: Path) -> None:
    inside = tmp_path / "keys"
    inside.mkdir()
    key = write_private(inside / "gh", VALUE)
    outside = write_private(tmp_path / "elsewhere", VALUE)
    options = SourceOptions(file_roots=(str(inside),))
    assert resolve_credential(f"file://{key}", environ={}, options=options).reveal() == VALUE
    with pytest.raises(InsecureSource, match="outside"):
        resolve_credential(f"file://{outside}", environ={}, options=options)
    with pytest.raises(ValueError):
        SourceOptions(file_roots=())


def test_file_values_must_be_text_of_sane_size(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe\x00")
    binary.chmod(0o600)
    with pytest.raises(BadValue, match="not UTF-8"):
        resolve_credential(f"file://{binary}", environ={})
    big = write_private(tmp_path / "big", "x" * (65 * 1024))
    with pytest.raises(BadValue, match="larger"):
        resolve_credential(f"file://{big}", environ={})
    empty = write_private(tmp_path / "empty", "\n")
    with pytest.raises(CredentialNotFound, match="empty"):
        resolve_credential(f"file://{empty}", environ={})


def test_op_without_the_cli_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no `op` on it
    with pytest.raises(CredentialUnavailable, match="1Password CLI") as info:
        resolve_credential("op://Dev/OpenAI/credential", environ={})
    assert info.value.hint is not None and "op signin" in info.value.hint


def fake_op(directory: Path, script: str) -> SourceOptions:
    op = directory / "op"
    op.write_text("#!/bin/sh\n" + script)
    op.chmod(op.stat().st_mode | stat.S_IXUSR)
    return SourceOptions(op_command=str(op), op_timeout=5)


def test_op_reads_through_the_cli_with_an_argv(tmp_path: Path) -> None:
    # The fake CLI checks its arguments: `read` and the reference as one argument, no shell.
    options = fake_op(tmp_path, '[ "$1" = read ] && [ "$2" = "op://Dev/My Item/field" ] '
                      f'&& [ $# = 2 ] && printf "%s\\n" "{VALUE}" || exit 3\n')
    secret = resolve_credential("op://Dev/My Item/field", environ={}, options=options)
    assert secret.reveal() == VALUE


def test_op_failures_are_reported_without_output(tmp_path: Path) -> None:
    options = fake_op(tmp_path, f'echo "{VALUE}"; echo "[ERROR] {VALUE}" >&2; exit 1\n')
    with pytest.raises(CredentialUnavailable, match="exit status 1") as info:
        resolve_credential("op://v/i/f", environ={}, options=options)
    assert VALUE not in info.value.diagnostics()


def test_op_that_hangs_times_out(tmp_path: Path) -> None:
    # A shell that starts a child holding our pipes: the whole group must be ended.
    options = fake_op(tmp_path, "sleep 30 & sleep 30\n")
    options = SourceOptions(op_command=options.op_command, op_timeout=0.3)
    with pytest.raises(CredentialUnavailable, match="did not answer"):
        resolve_credential("op://v/i/f", environ={}, options=options)


def test_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    write_private(creds / "github_token", VALUE, 0o440)
    options = SourceOptions(credentials_directory=str(creds))
    assert resolve_credential("systemd-creds://github_token", environ={},
                              options=options).reveal() == VALUE
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_credential("systemd-creds://github_token", environ={}).reveal() == VALUE
    # The environment a client passes in never chooses the directory.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(CredentialUnavailable, match="CREDENTIALS_DIRECTORY"):
        resolve_credential("systemd-creds://github_token",
                           environ={"CREDENTIALS_DIRECTORY": str(creds)})
    with pytest.raises(CredentialNotFound):
        resolve_credential("systemd-creds://other", environ={}, options=options)


def test_env_credentials_pairs() -> None:
    pairs = resolve_env_credentials([("env://DB", "DATABASE_PASSWORD")],
                                    environ={"DB": VALUE})
    ((variable, secret),) = pairs
    assert variable == "DATABASE_PASSWORD" and secret.reveal() == VALUE


@pytest.mark.parametrize("reference", ["env://TOKEN", "github_token", "keyring://svc/acct",
                                       "op://vault/item/field", "systemd-creds://token"])
def test_without_daemon_stores_only_files_are_read(reference: str) -> None:
    """The system daemon, for a caller other than root: nothing of the daemon's own."""
    options = SourceOptions(daemon_stores=False)
    with pytest.raises(SourceNotPermitted) as refused:
        resolve_credential(reference, environ={"TOKEN": VALUE}, options=options)
    assert refused.value.code == "credential.not_permitted"
    assert reference in str(refused.value) and VALUE not in str(refused.value)


def test_without_daemon_stores_a_file_is_still_read(tmp_path: Path) -> None:
    key = write_private(tmp_path / "key", VALUE + "\n")
    options = SourceOptions(daemon_stores=False)
    assert resolve_credential(f"file://{key}", environ={}, options=options).reveal() == VALUE

