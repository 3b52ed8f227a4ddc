"""``nono run``'s command line given to ``nonoctl launch`` (nonoctl/_nono.py): every option of
nono's is read with nono's meaning or refused by name, nono's two-word
``--env-credential-map`` works, and the ``NONO_*`` variables nono's flags read mean the same
here (``NONO_BLOCK_NET=1`` blocks the network) or refuse the launch.
fixtures/nono-run-flags.json lists nono 0.66's options (see its ``source``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonoctl import _cli, _nono
from nonoctl._flags import JSON, LAUNCH_FLAGS, LAUNCH_OWN
from nonod._profile_source import overrides_from
from nonod.errors import PolicyError
from nonod.policy import ResolvedPolicy
from nonod.profiles import ResolveContext, parse_profile, resolve

NONO = json.loads((Path(__file__).parent / "fixtures" / "nono-run-flags.json").read_text())
NONO_NAMES = sorted(n for name, spec in NONO["flags"].items() for n in (name, *spec["aliases"]))
OURS = {n for f in (*LAUNCH_OWN, JSON, *(f for _, g in LAUNCH_FLAGS for f in g))
        for n in f.names}
REFUSED = {n for names, _ in _nono.REFUSED_FLAGS for n in names}


def test_every_option_of_nonos_run_is_taken_or_refused_by_name() -> None:
    assert [n for n in NONO_NAMES if n not in OURS and n not in REFUSED] == []
    assert not OURS & REFUSED
    assert not REFUSED - set(NONO_NAMES)  # no invented names


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_option_says_whose_it_is_and_what_to_do(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("NONO_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setenv("NONO_NO_AUTOSTART", "1")
    for words in (["launch", "gitbot", name, "x"], ["run", f"{name}=x", "--", "/bin/true"]):
        assert _cli.main(words) == _cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith(f"nonoctl: nono's {name} is not supported by nonoctl: "), err
        assert len(err.splitlines()) == 1


def _args(words: list[str]) -> argparse.Namespace:
    words = _nono.join_env_credential_map(words)
    fast = _cli._fast_args(words)
    return fast if fast is not None else _cli.build_parser("launch").parse_args(words)


@pytest.mark.parametrize("words", [
    ["launch", "--allow-proxy", "a.example", "--proxy-allow", "b.example", "--allow-bind", "8080",
     "--detached", "bot"],
    ["launch", "--allow-domain", "a.example", "--allow-host", "b.example", "--listen-port",
     "8080", "-d", "bot"],
])
def test_nonos_aliases_are_the_same_options(words: list[str]) -> None:
    args = _args(words)
    assert (args.allow_domain, args.listen_port, args.detach, args.profile_name) == (
        ["a.example", "b.example"], [8080], True, "bot")


@pytest.mark.parametrize(("words", "pairs", "profile"), [
    (["launch", "--env-credential-map", "op://v/i/f", "API_KEY", "bot"],
     ["op://v/i/f=API_KEY"], "bot"),
    (["launch", "--env-credential-map", "op://v/i/f=API_KEY", "bot"],
     ["op://v/i/f=API_KEY"], "bot"),
    (["launch", "bot", "--env-credential-map", "file:///k", "K", "--env-credential-map",
      "gemini", "GEMINI_API_KEY"], ["file:///k=K", "gemini=GEMINI_API_KEY"], "bot"),
    # A reference holding `=` in nono's two words: its tail is no variable name.
    (["launch", "--env-credential-map", "file:///a=b/c", "V"], ["file:///a=b/c=V"], None),
])
def test_env_credential_map_takes_nonos_two_words(
    words: list[str], pairs: list[str], profile: str | None
) -> None:
    args = _args(words)
    assert (args.env_credential_map, args.profile_name) == (pairs, profile)
    overrides = overrides_from(_cli._options(args))
    assert [f"{r}={v}" for r, v in overrides.env_credential_map] == pairs


def _policy(args: argparse.Namespace, tmp_path: Path, profile: bytes = b"{}") -> ResolvedPolicy:
    ctx = ResolveContext(home=f"{tmp_path}-home", workdir=str(tmp_path), uid=1000)
    return resolve(parse_profile(profile, "p.json"), ctx,
                   overrides=overrides_from(_cli._options(args)))


def _with_env(words: list[str], environ: dict[str, str], *, with_profile: bool = True,
              ) -> tuple[argparse.Namespace, list[str]]:
    args = _args(words)
    notes: list[str] = []
    _nono.apply_environment(vars(args), environ, with_profile=with_profile,
                            note=notes.append)
    return args, notes


GITBOT_NET = b'{"network": {"allow_domain": ["api.github.com"]}}'


def test_nono_block_net_blocks_the_network(tmp_path: Path) -> None:
    # Before: nonoctl did not read it, and the session got the profile's network.
    args, notes = _with_env(["launch", "bot"], {"NONO_BLOCK_NET": "true"})
    policy = _policy(args, tmp_path, GITBOT_NET)
    assert policy.network.block and policy.network.allow_domain == ()
    assert notes == []
    args, _ = _with_env(["launch", "bot"], {"NONO_BLOCK_NET": "0"})
    assert not _policy(args, tmp_path, GITBOT_NET).network.block


def test_nonos_list_variables_fill_only_what_the_command_line_left_empty(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    environ = {"NONO_ALLOW": f"{tmp_path}/a,{tmp_path}/b", "NONO_ALLOW_DOMAIN": "x.example",
               "NONO_CREDENTIAL": "github", "NONO_PROFILE": "gitbot"}
    args, _ = _with_env(["launch"], environ)
    assert (args.allow, args.allow_domain, args.credential, args.profile) == (
        [f"{tmp_path}/a", f"{tmp_path}/b"], ["x.example"], ["github"], "gitbot")
    grants = {g.path for g in _policy(args, tmp_path).grants}
    assert {f"{tmp_path}/a", f"{tmp_path}/b"} <= grants
    # The command line wins over a variable, whole (clap's rule).
    args, _ = _with_env(["launch", "mine", "--allow-domain", "y.example"], environ)
    assert (args.allow_domain, args.profile, args.profile_name) == (
        ["y.example"], None, "mine")
    # `profile show` names its profile itself.
    args, _ = _with_env(["launch"], {"NONO_PROFILE": "gitbot"}, with_profile=False)
    assert args.profile is None


def test_nono_network_profile_restricts_the_network(tmp_path: Path) -> None:
    args, _ = _with_env(["launch"], {"NONO_NETWORK_PROFILE": "minimal"})
    policy = _policy(args, tmp_path)
    assert policy.network.restricted and policy.network.network_profile == "minimal"
    assert "api.openai.com" in policy.network.allow_domain
    assert "pypi.org" not in policy.network.allow_domain
    # --network-profile replaces the profile's.
    args = _args(["launch", "--network-profile", "minimal"])
    profile = b'{"network": {"network_profile": "developer"}}'
    assert "pypi.org" not in _policy(args, tmp_path, profile).network.allow_domain
    with pytest.raises(PolicyError, match="unknown network profile `nope`") as info:
        _policy(_args(["launch", "--network-profile", "nope"]), tmp_path)
    assert info.value.hint is not None and "developer" in info.value.hint
    blocked = _policy(_args(["launch", "--network-profile", "minimal", "--block-net"]),
                      tmp_path)
    assert blocked.network.block and blocked.network.allow_domain == ()


@pytest.mark.parametrize("name", ["NONO_UPSTREAM_PROXY", "NONO_UPSTREAM_BYPASS",
                                  "NONO_ENV_CREDENTIAL", "NONO_PROXY_CA_VALIDITY"])
def test_a_variable_nonoctl_cannot_honour_refuses_the_launch(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("NONO_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setenv("NONO_NO_AUTOSTART", "1")
    monkeypatch.setenv(name, "x")
    assert _cli.main(["launch", "--allow-cwd", "--", "/bin/true"]) == _cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"nonoctl: {name} is set: "), err
    assert "cannot connect" not in err
    monkeypatch.setenv(name, "")  # empty is unset, as clap reads it
    assert _cli.main(["launch", "--allow-cwd", "--", "/bin/true"]) == _cli.EXIT_DAEMON


@pytest.mark.parametrize("name", ["NONO_ALLOW_NET", "NONO_TRUST_OVERRIDE",
                                  "NONO_CAPABILITY_ELEVATION", "NONO_TRUST_PROXY_CA"])
def test_a_variable_asking_for_more_is_noted_not_acted_on(name: str, tmp_path: Path) -> None:
    args, notes = _with_env(["launch"], {name: "yes"})
    assert notes == [notes[0]] and notes[0].startswith(f"nonoctl: note: {name} is not acted on")
    assert not args.trust_override
    policy = _policy(args, tmp_path, GITBOT_NET)
    assert policy.network.restricted and policy.network.allow_domain == ("api.github.com",)
    assert _with_env(["launch"], {name: "no"})[1] == []


def test_a_switch_that_is_neither_true_nor_false_is_an_error() -> None:
    with pytest.raises(_nono.NonoVariableError, match="NONO_BLOCK_NET='maybe'"):
        _with_env(["launch"], {"NONO_BLOCK_NET": "maybe"})
    with pytest.raises(_nono.NonoVariableError, match="empty entry"):
        _with_env(["launch"], {"NONO_ALLOW": "/a,,/b"})


@pytest.mark.parametrize(("words", "key", "include"), [
    (["trust", "export-key", "--id", "ci"], "ci", []),
    (["trust", "keygen", "--keyref", "keystore://ci"], "ci", []),
    (["trust", "init", "--include", "SKILLS*", "CLAUDE*", "--key", "k"], "k", ["SKILLS*",
                                                                           "CLAUDE*"]),
    (["trust", "init", "--include", "A", "--include", "B"], "default", ["A", "B"]),
])
def test_nonos_trust_options(words: list[str], key: str, include: list[str]) -> None:
    # nono's keygen and export-key name the key with --id, its key refs keystore://NAME, and
    # its init takes several patterns after one --include.
    args = _cli.build_parser("trust").parse_args(words)
    assert (_cli._trust_key(args.key), args.include) == (key, include)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["--env-credential-map", "op://v/i/f", "K", "a=B", "x=", "=Y",
                                 "file:///a=b/c", "bot", "--allow", "-d", "1X", ""]),
                max_size=8))
def test_joining_nonos_two_words_changes_nothing_else(words: list[str]) -> None:
    joined = _nono.join_env_credential_map(words)
    # Only a `--env-credential-map REF VAR` pair is rewritten, into `REF=VAR`; every other
    # word stays, in order.
    rebuilt: list[str] = []
    at = 0
    for word in joined:
        if rebuilt and rebuilt[-1] == "--env-credential-map" and at < len(words) \
                and word != words[at]:
            ref, _, var = word.rpartition("=")
            rebuilt += [ref, var]
            at += 2
        else:
            rebuilt.append(word)
            at += 1
    assert rebuilt == words
