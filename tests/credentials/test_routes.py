"""Built-in routes (nono's names and conventions), routes from profiles, the child's variables,
and loading a session's secrets."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from nonod.credentials import (
    BadValue,
    CredentialNotFound,
    PhantomToken,
    Route,
    RouteElsewhere,
    UnknownRoute,
    builtin_routes,
    credential_environment,
    load_route_secrets,
    session_routes,
)
from nonod.policy import CustomCredential, NetworkPolicy
from nonod.profiles import ResolveContext, load_profile, resolve

TOKEN = PhantomToken("a" * 64)

# (name, upstream, keychain account / reference, header, format, phantom variables)
NONO_FACTS = [
    ("openai", "https://api.openai.com/v1", "openai", "Authorization", "Bearer {}", ("OPENAI",)),
    ("anthropic", "https://api.anthropic.com", "env://ANTHROPIC_API_KEY", "x-api-key", "{}",
     ("ANTHROPIC_API_KEY",)),
    ("gemini", "https://generativelanguage.googleapis.com", "gemini", "x-goog-api-key", "{}",
     ("GEMINI",)),
    ("google-ai", "https://generativelanguage.googleapis.com", "google-ai", "x-goog-api-key",
     "{}", ("GOOGLE-AI", "GOOGLE_AI")),
    ("github", "https://api.github.com", "env://GITHUB_TOKEN", "Authorization", "token {}",
     ("GITHUB_TOKEN",)),
    ("gitlab", "https://gitlab.com/api", "env://GITLAB_TOKEN", "Authorization", "Bearer {}",
     ("GITLAB_TOKEN",)),
]


def test_the_builtin_routes_are_read_once_and_each_caller_gets_its_own_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every launch asks for them (its secret files, its routes): the data file is read and
    decoded once per process, and a caller's changes to its table stay its own."""
    from nonod.credentials import _routes

    _routes._builtin_table.cache_clear()
    reads: list[str] = []
    read_data = _routes.read_data

    def counted(name: str) -> bytes:
        reads.append(name)
        return read_data(name)

    monkeypatch.setattr(_routes, "read_data", counted)
    first = builtin_routes()
    first.pop("openai")
    second = builtin_routes()
    assert reads == ["credential_routes.json"]
    assert "openai" in second and len(second) == len(first) + 1


@pytest.mark.parametrize(("name", "upstream", "key", "header", "fmt", "variables"), NONO_FACTS)
def test_builtin_routes_follow_nono(name: str, upstream: str, key: str, header: str, fmt: str,
                                    variables: tuple[str, ...]) -> None:
    route = builtin_routes()[name]
    assert (route.upstream, route.credential_key, route.inject_header,
            route.credential_format) == (upstream, key, header, fmt)
    assert route.inject_mode == "header" and route.origin == "builtin"
    assert route.phantom_variables() == variables
    assert route.base_url_variables()[0] == f"{name.upper()}_BASE_URL"


def test_the_builtin_table_is_exactly_nonos_names() -> None:
    assert set(builtin_routes()) == {f[0] for f in NONO_FACTS}


def test_route_geometry() -> None:
    openai = builtin_routes()["openai"]
    assert (openai.host, openai.port, openai.base_path, openai.authority) == (
        "api.openai.com", 443, "/v1", "api.openai.com")
    local = Route(name="local", upstream="http://127.0.0.1:8080/api/", credential_key="k")
    assert (local.scheme, local.port, local.base_path, local.authority) == (
        "http", 8080, "/api", "127.0.0.1:8080")


@pytest.mark.parametrize(("fields", "match"), [
    ({"upstream": "http://api.example.com"}, "loopback"),
    ({"upstream": "ftp://x"}, "https"),
    ({"upstream": "https://user:pw@x.example"}, "without credentials"),
    ({"upstream": "https://x.example/?key=1"}, "query"),
    ({"credential_format": "Bearer"}, "once"),
    ({"credential_format": "{} {}"}, "once"),
    ({"inject_header": "Bad Header"}, "header name"),
    ({"inject_mode": "url_path"}, "path_pattern"),
    ({"inject_mode": "query_param"}, "query_param_name"),
    ({"credential_key": "bad key"}, "keychain account"),
    ({"endpoint_rules": (("GET", "no-slash"),)}, "start with"),
    ({"name": "a/b"}, "route name"),
])
def test_bad_routes_cannot_exist(fields: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"name": "r", "upstream": "https://x.example",
                               "credential_key": "k"}
    with pytest.raises(ValueError, match=match):
        Route(**{**base, **fields})  # type: ignore[arg-type]


def test_the_gitbot_profile_gives_its_routes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "bot").mkdir(parents=True)
    ctx = ResolveContext(home=str(home), workdir=str(home / "bot"), uid=os.getuid(),
                         tmpdir="/tmp")
    policy = resolve(load_profile("gitbot", user_dir=None), ctx)
    (gemini,) = session_routes(policy.network)  # `github` is defined, but not enabled
    assert gemini.origin == "builtin" and gemini.credential_key == "gemini"
    network = NetworkPolicy(restricted=True, credentials=("gemini", "github"),
                            custom_credentials=policy.network.custom_credentials)
    gemini, github = session_routes(network)
    assert github.origin == "profile"
    assert (github.upstream, github.credential_key, github.credential_format) == (
        "https://api.github.com", "github_token", "Bearer {}")
    env = dict(credential_environment([gemini, github], port=4321, token=TOKEN))
    assert env == {
        "GEMINI_BASE_URL": "http://127.0.0.1:4321/gemini",
        "GEMINI": TOKEN.reveal(),
        "GITHUB_BASE_URL": "http://127.0.0.1:4321/github",
        "GITHUB_TOKEN": TOKEN.reveal(),
    }


def test_custom_definitions_replace_builtins_and_unknown_names_fail() -> None:
    custom = CustomCredential(upstream="https://api.openai.com/v2", credential_key="mine",
                              inject_header="Authorization", credential_format="Bearer {}")
    network = NetworkPolicy(restricted=True, credentials=("openai",),
                            custom_credentials=(("openai", custom),))
    (route,) = session_routes(network)
    assert (route.upstream, route.origin) == ("https://api.openai.com/v2", "profile")
    # ... at the built-in's host only (redteam27): the name is what a person reads.
    elsewhere = msgspec.structs.replace(custom, upstream="https://proxy.example/v1")
    with pytest.raises(RouteElsewhere, match="built-in route `openai`"):
        session_routes(msgspec.structs.replace(
            network, custom_credentials=(("openai", elsewhere),)))
    # nor with a CA of the profile's own for the built-in's host (a repository's file)
    own_ca = msgspec.structs.replace(custom, tls_ca="/work/repo/ca.pem")
    with pytest.raises(RouteElsewhere, match="a CA of its own"):
        session_routes(msgspec.structs.replace(
            network, custom_credentials=(("openai", own_ca),)))
    with pytest.raises(UnknownRoute, match="nope") as info:
        session_routes(NetworkPolicy(restricted=True, credentials=("nope",)))
    assert info.value.hint is not None and "gemini" in info.value.hint


def test_anthropic_is_nonos_route_and_a_keychain_account_is_a_custom_route() -> None:
    # nono 0.66 (network-policy.json): the key from ANTHROPIC_API_KEY, the phantom token where
    # Anthropic's SDKs read it. The docs' alternative for a key kept in the keychain.
    (builtin,) = session_routes(NetworkPolicy(restricted=True, credentials=("anthropic",)))
    env = dict(credential_environment([builtin], port=7, token=TOKEN))
    assert env == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:7/anthropic",
                   "ANTHROPIC_API_KEY": TOKEN.reveal()}
    custom = CustomCredential(upstream="https://api.anthropic.com", credential_key="anthropic",
                              inject_header="x-api-key", credential_format="{}",
                              env_var="ANTHROPIC_API_KEY")
    (route,) = session_routes(NetworkPolicy(restricted=True, credentials=("anthropic",),
                                            custom_credentials=(("anthropic", custom),)))
    assert (route.credential_key, route.phantom_variables()) == ("anthropic",
                                                                 ("ANTHROPIC_API_KEY",))



def test_a_passed_on_anthropic_key_is_replaced_by_the_phantom_token() -> None:
    # Before: the phantom went to ANTHROPIC, and a profile that named ANTHROPIC_API_KEY in
    # allow_vars handed the program the caller's real key, which its SDK then used.
    from nonod.policy import EnvPolicy
    from nonod.sandbox import sanitize_env

    (route,) = session_routes(NetworkPolicy(restricted=True, credentials=("anthropic",)))
    env = sanitize_env(EnvPolicy(allow_vars=("ANTHROPIC_API_KEY",)),
                       [("ANTHROPIC_API_KEY", "sk-ant-real")],
                       credential_environment([route], port=7, token=TOKEN))
    assert f"ANTHROPIC_API_KEY={TOKEN.reveal()}" in env
    assert not any("sk-ant-real" in item for item in env)


def test_uri_keys_without_env_var_get_no_phantom_variable() -> None:
    route = Route(name="svc", upstream="https://svc.example", credential_key="op://v/i/f")
    assert route.phantom_variables() == ()
    env = dict(credential_environment([route], port=1, token=TOKEN))
    assert env == {"SVC_BASE_URL": "http://127.0.0.1:1/svc"}


async def test_loading_keeps_failures_with_their_routes() -> None:
    good = Route(name="good", upstream="https://a.example", credential_key="env://GOOD")
    missing = Route(name="missing", upstream="https://b.example", credential_key="env://NOPE")
    broken = Route(name="broken", upstream="https://c.example", credential_key="env://BROKEN")
    loaded = await load_route_secrets([good, missing, broken],
                                      environ={"GOOD": "v4lue", "BROKEN": "line\nbreak"})
    assert [r.route.name for r in loaded] == ["good", "missing", "broken"]
    assert loaded[0].secret is not None and loaded[0].secret.reveal() == "v4lue"
    assert loaded[1].secret is None and isinstance(loaded[1].error, CredentialNotFound)
    assert loaded[2].secret is None and isinstance(loaded[2].error, BadValue)
    assert "line" not in repr(loaded) and "v4lue" not in repr(loaded)
