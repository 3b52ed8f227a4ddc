"""``SecretHosts`` (nonod/credentials/_hosts.py) on a real state directory: one secret has
one binding whatever its spelling, and a failure to save changes nothing (review23)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nonod.credentials import LaunchBindings, SecretElsewhere, SecretHosts, SecretHostsError
from nonod.credentials._hosts import secret_key

GITHUB = "https://api.github.com"
EVIL = "https://evil.example"


@pytest.mark.parametrize(("first", "second"), [
    ("github_token", "keyring://nono/github_token"),
    ("keyring://nono/github_token", "github_token"),
    ("github_token", "keyring://nono/github_token?decode=go-keyring"),
    ("keyring://gh:github.com/octo", "keyring://gh:github.com/octo?decode=go-keyring"),
    ("file:///run/keys/token", "file:////run//keys/token"),
    # 1Password: "Secret references are case-insensitive" (its secret reference syntax)
    ("op://Dev/Stripe/publishable-key", "op://dev/STRIPE/Publishable-Key"),
    # `op read` takes query parameters that read the same field (review27): its value
    # spelled out, an SSH key's private key in another format
    ("op://app-prod/db/password", "op://app-prod/db/password?attribute=value"),
    ("op://Private/ssh keys/private key", "op://private/SSH keys/private key?ssh-format=openssh"),
])
def test_two_spellings_of_one_secret_share_its_hosts(tmp_path: Path, first: str,
                                                     second: str) -> None:
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", first, GITHUB)])
    # before: the second spelling was a reference never routed, bound to evil.example
    with pytest.raises(SecretElsewhere, match=r"has been sent only to https://api\.github\.com"):
        hosts.admit(None, [("theirs", second, EVIL)])
    assert hosts.hosts(None, second) == (GITHUB,)
    # after a restart too
    assert SecretHosts(tmp_path).hosts(None, second) == (GITHUB,)


def test_other_secrets_stay_apart(tmp_path: Path) -> None:
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", "github_token", GITHUB)])
    assert hosts.admit(None, [("a", "keyring://other/github_token", EVIL),
                              ("b", "env://github_token", EVIL),
                              ("c", "GITHUB_TOKEN", EVIL)])
    hosts.admit(7, [("theirs", "github_token", EVIL)])  # another user's own


def test_a_file_written_with_two_spellings_keeps_every_host(tmp_path: Path) -> None:
    (tmp_path / "secret-hosts.json").write_text(
        '{"version": 1, "bindings": ['
        '{"uid": null, "reference": "keyring://nono/gh", "origins": ["https://a.example"]},'
        '{"uid": null, "reference": "gh", "origins": ["https://b.example"]}]}')
    hosts = SecretHosts(tmp_path)
    assert set(hosts.hosts(None, "gh")) == {"https://a.example", "https://b.example"}
    with pytest.raises(SecretElsewhere):
        hosts.admit(None, [("x", "gh", EVIL)])


def _unsavable(tmp_path: Path) -> None:
    # The next save's temporary file cannot be opened for writing.
    (tmp_path / "secret-hosts.json.tmp").mkdir()


def test_an_add_that_cannot_be_saved_allows_nothing(tmp_path: Path) -> None:
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", "gh", GITHUB)])
    _unsavable(tmp_path)
    with pytest.raises(SecretHostsError, match="cannot save"):
        hosts.add(None, "gh", [EVIL])
    # before: the host said refused was allowed until the daemon restarted
    assert hosts.hosts(None, "gh") == (GITHUB,)
    with pytest.raises(SecretElsewhere):
        hosts.admit(None, [("theirs", "gh", EVIL)])


def test_a_clear_that_cannot_be_saved_forgets_nothing(tmp_path: Path) -> None:
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", "gh", GITHUB)])
    _unsavable(tmp_path)
    with pytest.raises(SecretHostsError, match="cannot save"):
        hosts.clear(None, "gh")
    # before: forgotten in memory, so the next route (any host) bound it anew
    with pytest.raises(SecretElsewhere):
        hosts.admit(None, [("theirs", "gh", EVIL)])


async def test_a_webhook_key_is_a_secret_sent_to_the_webhook(tmp_path: Path) -> None:
    """A profile's approval webhook signs what it posts with its ``key``, a credential
    reference: an HMAC of bodies the program steers, under the user's secret, sent to a URL
    the profile names (a short password falls to an offline guess). Before review23 the key
    was read and used whatever the reference's hosts; now it is bound like a route's."""
    import trio

    from nonod import _session_services
    from nonod.policy import (
        Access,
        ApprovalBackend,
        ApprovalPolicy,
        Grant,
        NetworkPolicy,
        ResolvedPolicy,
    )
    from nonod.sandbox import LaunchRequest

    token = tmp_path / "token"
    token.write_text("the user's secret")
    token.chmod(0o600)
    key = f"file://{token}"
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", key, GITHUB)])

    def policy(url: str) -> ResolvedPolicy:
        return ResolvedPolicy(
            name="hook", grants=(Grant(path="/usr", access=Access.READ),), denials=(),
            network=NetworkPolicy(restricted=True, allow_domain=("api.github.com",),
                                  approval=ApprovalPolicy(backend="hook", backends=(
                                      ApprovalBackend(name="hook", type="webhook", url=url,
                                                      key=key),))))

    async def prepare(url: str) -> _session_services.SessionServices:
        return await _session_services.prepare(
            policy(url), LaunchRequest(argv=("/bin/true",), cwd=str(tmp_path)),
            settings=_session_services.NetworkSettings(), environ={}, secret_hosts=hosts)

    # before: prepared, with the key read for evil.example's webhook
    with pytest.raises(SecretElsewhere, match=r"approval webhook `hook`"):
        await prepare(f"{EVIL}/hook")
    done = await prepare(f"{GITHUB}/hook")  # where it has been sent: as before
    assert done.approval_keys == {"hook": b"the user's secret"}
    await trio.lowlevel.checkpoint()


def test_one_user_cannot_make_the_file_unreadable_for_the_others(tmp_path: Path) -> None:
    """The system daemon keeps every user's bindings in one file, read back (at most 4 MiB)
    at its next start. One user's `secret hosts --add` with long references and host names
    wrote past that, and after a restart every user's launch with a route was refused
    ("cannot read secret-hosts.json"). Now each user's share is bounded, below the file's."""
    hosts = SecretHosts(tmp_path)
    hosts.admit(2002, [("theirs", "file:///home/b/token", GITHUB)])
    long_hosts = [f"https://{'a' * 60}.{'b' * 60}.{'c' * 60}.{i}.example" for i in range(32)]
    refused = None
    for n in range(512):
        try:
            hosts.add(1001, f"file:///home/a/{'x' * 3000}{n}", long_hosts)
        except SecretHostsError as exc:
            refused = exc
            break
    # before: every add accepted, a file of over 4 MiB
    assert refused is not None and "1001" not in str(refused)
    again = SecretHosts(tmp_path)  # the daemon restarted
    assert again.hosts(2002, "file:///home/b/token") == (GITHUB,)
    assert again.admit(2002, [("more", "file:///home/b/other", GITHUB)])


def test_an_upstream_host_longer_than_dns_allows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not an http"):
        SecretHosts(tmp_path).add(None, "gh", [f"https://{'a' * 300}.example"])


async def test_a_ca_of_the_profiles_own_is_another_upstream(tmp_path: Path) -> None:
    """A route to the bound host that trusts a CA the profile chose (``tls_ca``) sends the
    secret to whoever holds that CA's key and a place on the path: the built-in routes
    refuse it (``_stays_home``), a bound reference took it as the same upstream."""
    from nonod import _session_services
    from nonod.policy import Access, CustomCredential, Grant, NetworkPolicy, ResolvedPolicy
    from nonod.sandbox import LaunchRequest

    token = tmp_path / "token"
    token.write_text("the user's secret")
    token.chmod(0o600)
    key = f"file://{token}"
    ca = tmp_path / "their-ca.pem"
    ca.write_text("")
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", key, "https://svc.example")])
    policy = ResolvedPolicy(
        name="theirs", grants=(Grant(path="/usr", access=Access.READ),), denials=(),
        network=NetworkPolicy(restricted=True, credentials=("svc",), custom_credentials=((
            "svc", CustomCredential(upstream="https://svc.example/v1", credential_key=key,
                                    env_var="SVC", tls_ca=str(ca))),)))
    # before: admitted, the secret read and sent through the profile's CA
    with pytest.raises(SecretElsewhere, match=rf"to https://svc\.example \(trusting {ca}\)"):
        await _session_services.prepare(
            policy, LaunchRequest(argv=("/bin/true",), cwd=str(tmp_path)),
            settings=_session_services.NetworkSettings(), environ={}, secret_hosts=hosts)
    # The spelling the refusal's hint gives is what `secret hosts --add` takes.
    assert hosts.add(None, key, [f"https://svc.example (trusting {ca})"])[-1] == \
        f"https://svc.example (trusting {ca})"
    assert hosts.admit(None, [("svc", key, f"https://svc.example/v1 (trusting {ca})")]) == ()


def test_the_hint_is_a_command_that_can_be_pasted(tmp_path: Path) -> None:
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", "gh", GITHUB)])
    with pytest.raises(SecretElsewhere) as refused:
        hosts.admit(None, [("theirs", "gh", f"{GITHUB} (trusting /their/ca.pem)")])
    assert refused.value.hint is not None and \
        "--add 'https://api.github.com (trusting /their/ca.pem)'" in refused.value.hint
    for bad in (f"{GITHUB} (trusting ca.pem)", f"{GITHUB} (trusting /a(b).pem)",
                f"{GITHUB} x", f"{GITHUB}  (trusting /ca.pem)"):
        with pytest.raises(Exception, match="not an http"):
            hosts.add(None, "gh", [bad])
    assert hosts.hosts(None, "gh") == (GITHUB,)


def test_an_upstream_cannot_spell_a_ca_it_does_not_trust() -> None:
    from nonod.credentials import trusting

    with pytest.raises(Exception, match="white space"):
        trusting(f"{GITHUB}/x (trusting /etc/corp-ca.pem)", None)
    assert trusting(GITHUB, "/etc/ca.pem") == f"{GITHUB} (trusting /etc/ca.pem)"


@pytest.mark.parametrize("flip", ["the repository's link", "a directory of the bound path"])
async def test_a_link_changed_between_binding_and_reading_sends_nothing(
        tmp_path: Path, flip: str) -> None:
    """A file reference's links were resolved when it was bound and again when it was read:
    another session of the same profile, writing the repository, could change a link in
    between, and the launch read and sent a file other than the one bound (here the user's
    token, bound to api.github.com, to evil.example). Now the path bound is the path read,
    with no link on the way: either the bound file is read, or the read is refused."""
    from nonod import _session_services
    from nonod.credentials import CredentialError
    from nonod.policy import Access, CustomCredential, Grant, NetworkPolicy, ResolvedPolicy
    from nonod.sandbox import LaunchRequest

    secrets, decoy, repo = tmp_path / "secrets", tmp_path / "decoy", tmp_path / "repo"
    for directory, value in ((secrets, "the user's secret"), (decoy, "the decoy's value")):
        directory.mkdir()
        (directory / "token").write_text(value)
        (directory / "token").chmod(0o600)
    repo.mkdir()
    (repo / "keys").symlink_to(decoy)
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", f"file://{secrets}/token", GITHUB)])

    class Racing(SecretHosts):
        """The other session changes a link once the launch has bound the reference."""

        def admit(self, *args: object, **kwargs: object) -> tuple[str, ...]:
            done = super().admit(*args, **kwargs)  # type: ignore[arg-type]
            if flip == "the repository's link":
                (repo / "keys").unlink()
                (repo / "keys").symlink_to(secrets)
            else:
                decoy.rename(tmp_path / "decoy.old")
                decoy.symlink_to(secrets)
            return done

    policy = ResolvedPolicy(
        name="theirs", grants=(Grant(path="/usr", access=Access.READ),), denials=(),
        network=NetworkPolicy(restricted=True, credentials=("svc",), custom_credentials=((
            "svc", CustomCredential(upstream=EVIL, credential_key=f"file://{repo}/keys/token",
                                    env_var="SVC")),)))
    try:
        prepared = await _session_services.prepare(
            policy, LaunchRequest(argv=("/bin/true",), cwd=str(tmp_path)),
            settings=_session_services.NetworkSettings(), environ={},
            secret_hosts=Racing(tmp_path))
    except CredentialError as refused:
        assert "a link on its path changed" in refused.message
        return
    # before: the user's secret was the route's (and so sent to evil.example)
    assert not any("the user's secret" in hidden for hidden in prepared.hidden)
    assert any("the decoy's value" in hidden for hidden in prepared.hidden)


def _bindings_file(tmp_path: Path) -> str:
    return (tmp_path / "secret-hosts.json").read_text()


def test_a_refused_launch_undoes_its_binding_and_one_that_ran_keeps_it(
        tmp_path: Path) -> None:
    hosts = SecretHosts(tmp_path)
    refused = LaunchBindings()
    assert hosts.admit(None, [("theirs", "gh", EVIL)], launch=refused)
    # Provisional, but bound meanwhile: a launch routing it elsewhere is refused, saying so.
    with pytest.raises(SecretElsewhere, match="by a launch not started yet"):
        hosts.admit(None, [("mine", "gh", GITHUB)], launch=LaunchBindings())
    assert hosts.withdraw(refused) == ("gh",)
    assert hosts.hosts(None, "gh") == ()
    assert SecretHosts(tmp_path).hosts(None, "gh") == ()  # the file says so too
    ran = LaunchBindings()
    assert hosts.admit(None, [("mine", "gh", GITHUB)], launch=ran)
    hosts.confirm(ran)
    assert hosts.withdraw(ran) == ()  # settled once
    assert hosts.confirm_due and '"pending": true' in _bindings_file(tmp_path)
    hosts.save_confirmed()  # the registry's, after the launch (known2)
    assert not hosts.confirm_due and "pending" not in _bindings_file(tmp_path)
    assert SecretHosts(tmp_path).hosts(None, "gh") == (GITHUB,)


def test_a_binding_two_launches_rely_on_goes_only_if_both_are_refused(
        tmp_path: Path) -> None:
    hosts = SecretHosts(tmp_path)
    first, second = LaunchBindings(), LaunchBindings()
    assert hosts.admit(None, [("a", "gh", GITHUB)], launch=first)
    assert hosts.admit(None, [("b", "gh", GITHUB)], launch=second) == ()  # relies on it
    assert hosts.withdraw(first) == ()  # the second may still run
    assert hosts.hosts(None, "gh") == (GITHUB,)
    assert hosts.withdraw(second) == ("gh",)
    assert hosts.hosts(None, "gh") == ()

    third, fourth = LaunchBindings(), LaunchBindings()
    hosts.admit(None, [("a", "gh", GITHUB)], launch=third)
    hosts.admit(None, [("b", "gh", GITHUB)], launch=fourth)
    hosts.confirm(fourth)  # it ran: the binding stays, whoever made it
    assert hosts.withdraw(third) == ()
    hosts.save_confirmed()
    assert SecretHosts(tmp_path).hosts(None, "gh") == (GITHUB,)


def test_the_users_word_settles_a_provisional_binding(tmp_path: Path) -> None:
    hosts = SecretHosts(tmp_path)
    added = LaunchBindings()
    hosts.admit(None, [("a", "gh", GITHUB)], launch=added)
    hosts.add(None, "gh", [EVIL])
    assert hosts.withdraw(added) == ()
    assert hosts.hosts(None, "gh") == (GITHUB, EVIL)
    assert "pending" not in _bindings_file(tmp_path)  # the user's word is saved as such

    cleared = LaunchBindings()
    hosts.admit(None, [("a", "other", GITHUB)], launch=cleared)
    hosts.clear(None, "other")
    again = LaunchBindings()
    hosts.admit(None, [("b", "other", EVIL)], launch=again)  # bound anew, by another launch
    assert hosts.withdraw(cleared) == ()  # not the one it made
    assert hosts.hosts(None, "other") == (EVIL,)


def test_a_binding_that_cannot_be_undone_stays(tmp_path: Path) -> None:
    hosts = SecretHosts(tmp_path)
    refused = LaunchBindings()
    hosts.admit(None, [("theirs", "gh", EVIL)], launch=refused)
    before = _bindings_file(tmp_path)
    _unsavable(tmp_path)
    assert hosts.withdraw(refused) == ()  # logged, never raised: the refusal stands
    assert hosts.hosts(None, "gh") == (EVIL,)
    assert _bindings_file(tmp_path) == before


@pytest.mark.xfail(strict=True, reason="review23, found and not closed: a binding names a "
                   "path, and a hard link is another path to the same file (binding the "
                   "file's identity instead would lose every binding when a token file is "
                   "replaced by a rename, as rotation does)")
def test_a_hard_link_to_a_bound_file_is_the_same_secret(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("the user's secret")
    (tmp_path / "elsewhere").mkdir()
    os.link(token, tmp_path / "elsewhere" / "token")
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", f"file://{token}", GITHUB)])
    with pytest.raises(SecretElsewhere):
        hosts.admit(None, [("theirs", f"file://{tmp_path}/elsewhere/token", EVIL)])


@pytest.mark.parametrize("order", ["systemd first", "file first"])
def test_a_systemd_credential_read_as_a_file_is_the_same_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    """review27: ``systemd-creds://gh`` reads ``$CREDENTIALS_DIRECTORY/gh``, and a root
    caller's ``file://`` reference reads the same file (the directory is predictable:
    ``/run/credentials/nonod.service``). Bound under one spelling, the secret went to any
    host under the other."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "gh").write_text("the daemon's token")
    (tmp_path / "through").symlink_to(directory)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    state = tmp_path / "state"
    state.mkdir()
    hosts = SecretHosts(state)
    spellings = ["systemd-creds://gh", f"file://{directory}/gh", f"file:///{directory}//gh",
                 f"file://{tmp_path}/through/gh"]
    first, others = (spellings[0], spellings[1:]) if order == "systemd first" else \
        (spellings[1], [spellings[0], *spellings[2:]])
    hosts.admit(None, [("mine", first, GITHUB)])
    for other in others:
        # before: a new binding, and the file's value sent to evil.example
        with pytest.raises(SecretElsewhere, match=r"has been sent only to https://api\.github"):
            hosts.admit(None, [("theirs", other, EVIL)])
        assert hosts.admit(None, [("again", other, GITHUB)]) == ()
    assert SecretHosts(state).hosts(None, "systemd-creds://gh") == (GITHUB,)


def test_a_1password_field_named_with_its_section_is_the_same_secret(tmp_path: Path) -> None:
    """review27's xfail, closed in known2: ``op read op://vault/item/field`` matches the
    field's name among all the item's fields, in any section (and reads nothing when two
    match), so ``op://vault/item/section/field`` names the field it reads: one binding."""
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("mine", "op://dev/stripe/secret-key", GITHUB)])
    with pytest.raises(SecretElsewhere):  # before: bound anew, to evil.example
        hosts.admit(None, [("theirs", "op://dev/stripe/api/secret-key", EVIL)])
    assert hosts.admit(None, [("again", "op://Dev/Stripe/API/secret-key?attribute=otp",
                                 GITHUB)]) == ()
    hosts.admit(None, [("mine", "op://dev/aws/prod/key", GITHUB)])  # the other way round
    with pytest.raises(SecretElsewhere):
        hosts.admit(None, [("theirs", "op://dev/aws/key", EVIL)])
    assert secret_key("op://dev/aws/prod/key") == "op://dev/aws/key"


def test_a_binding_left_pending_by_a_daemon_that_stopped_is_withdrawn_when_read(
        tmp_path: Path) -> None:
    """known2: a launch's provisional binding is saved marked ``pending``; the next daemon
    (a fresh ``SecretHosts`` on the file) withdraws it and saves the file without it. A
    binding the user added to one held by a launch is the user's: never withdrawn."""
    hosts = SecretHosts(tmp_path)
    hosts.admit(None, [("a", "gh", EVIL)], launch=LaunchBindings())  # never settled
    hosts.admit(None, [("b", "mine", GITHUB)], launch=None)  # bound for good
    held = LaunchBindings()
    hosts.admit(None, [("c", "said", GITHUB)], launch=held)
    hosts.add(None, "said", [GITHUB])  # as it is, now the user's word
    stored = {e["reference"]: e for e in json.loads(_bindings_file(tmp_path))["bindings"]}
    assert stored["gh"]["pending"] is True and "pending" not in stored["mine"], stored
    assert "pending" not in stored["said"], stored
    after = SecretHosts(tmp_path)
    assert after.hosts(None, "gh") == ()  # before: (EVIL,), kept for good
    assert after.hosts(None, "mine") == (GITHUB,) and after.hosts(None, "said") == (GITHUB,)
    assert "gh" not in _bindings_file(tmp_path)
    assert after.admit(None, [("d", "gh", GITHUB)]) == (f"gh -> {GITHUB}",)
