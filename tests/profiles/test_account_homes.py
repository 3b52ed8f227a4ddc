"""A root caller's resolution denies the always-on groups' ``~/`` entries in the other
accounts' homes (``_resolve._account_homes``): the list is read again when the files say the
password database changed, and, when it has other sources (sssd, LDAP), after
``ACCOUNTS_RECHECK`` seconds too, whose changes no file shows (known1)."""

from __future__ import annotations

import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.profiles import _resolve


def _account(name: str, home: str) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", 4000, 4000, "", home, "/bin/sh"))


@pytest.fixture
def accounts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[pwd.struct_passwd]]:
    """The database's enumeration as a list the test changes (as sssd's would change with
    the directory's accounts, /etc/passwd untouched); the cache starts empty."""
    listed = [_account("local", "/home/local")]
    monkeypatch.setattr(pwd, "getpwall", lambda: list(listed))
    monkeypatch.setattr(_resolve, "_accounts", None)
    yield listed


@pytest.mark.parametrize("remote", [True, False])
def test_an_account_of_another_source_is_seen_after_the_recheck_interval(
        accounts: list[pwd.struct_passwd], monkeypatch: pytest.MonkeyPatch,
        remote: bool) -> None:
    monkeypatch.setattr(_resolve, "_remote_accounts", lambda: remote)
    assert _resolve._account_homes() == ("/home/local",)
    accounts.append(_account("ldap", "/home/ldap"))
    assert _resolve._account_homes() == ("/home/local",)  # within the interval: kept
    monkeypatch.setattr(_resolve, "ACCOUNTS_RECHECK", 0.0)
    # before: read again only when /etc/passwd changed
    expected = ("/home/local", "/home/ldap") if remote else ("/home/local",)
    assert _resolve._account_homes() == expected


def test_only_local_sources_are_local(tmp_path: Path) -> None:
    conf = tmp_path / "nsswitch.conf"
    for line, remote in [("passwd: files", False), ("passwd:  compat # comment", False),
                         ("passwd: files systemd", True), ("passwd: files sss", True),
                         ("passwd: files [NOTFOUND=return] ldap", True),
                         ("group: files sss", False)]:
        conf.write_text(f"# the host's\n{line}\n")
        assert _resolve._remote_accounts(str(conf)) is remote, line
    conf.unlink()
    assert _resolve._remote_accounts(str(conf)) is True  # unreadable: assume so
