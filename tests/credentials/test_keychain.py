"""The real keychain: gnome-keyring's Secret Service on a private D-Bus session bus.

Secrets are stored exactly as nono's documentation tells its users
(``secret-tool store --label=... service nono username NAME target default``) and must be
found by our keychain source; what ``nonoctl secret set`` stores must be found by
``secret-tool lookup ... target default`` (where nono's keyring crate looks).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import subprocess
import sys
import uuid

import pytest
import trio

from nonod.credentials import (
    BadValue,
    CredentialNotFound,
    CredentialUnavailable,
    Keychain,
    PhantomToken,
    Secret,
    credential_environment,
    load_route_secrets,
    resolve_credential,
    session_routes,
)
from nonod.policy import CustomCredential, NetworkPolicy
from nonod.proxy import ProxyPolicy, Resolver, RouteTable, serve_proxy
from tests.credentials.conftest import (
    Client,
    Pki,
    Responder,
    SecretService,
    UpstreamRequest,
    start_tls_upstream,
)


def secret_service_backend() -> object:
    from keyring.backends import SecretService as backend

    return backend.Keyring()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_a_secret_stored_with_nonos_secret_tool_command_is_found(keyring_env: SecretService
                                                                  ) -> None:
    name = unique("gemini")
    value = "AIza-real-gemini-key-" + uuid.uuid4().hex
    stored = keyring_env.secret_tool("store", f"--label=nono: {name}", "service", "nono",
                                     "username", name, "target", "default", stdin=value)
    assert stored.returncode == 0, stored.stderr
    secret = resolve_credential(name, environ={},
                                keyring_backend=secret_service_backend())  # type: ignore[arg-type]
    assert secret.reveal() == value
    keyring = resolve_credential(f"keyring://nono/{name}", environ={},
                                 keyring_backend=secret_service_backend())  # type: ignore[arg-type]
    assert keyring == secret


def test_a_token_gh_stored_is_read_with_nonos_go_keyring_decode(keyring_env: SecretService
                                                                   ) -> None:
    # The GitHub CLI (zalando/go-keyring) stores `go-keyring-base64:` and the base64 of its
    # token under service `gh:github.com`; nono reads it with ?decode=go-keyring.
    user = unique("octocat")
    token = "gho_" + uuid.uuid4().hex
    stored = keyring_env.secret_tool(
        "store", "--label=gh", "service", "gh:github.com", "username", user,
        stdin="go-keyring-base64:" + base64.b64encode(token.encode()).decode())
    assert stored.returncode == 0, stored.stderr
    backend = secret_service_backend()
    secret = resolve_credential(f"keyring://gh:github.com/{user}?decode=go-keyring",
                                environ={}, keyring_backend=backend)  # type: ignore[arg-type]
    assert secret.reveal() == token
    raw = resolve_credential(f"keyring://gh:github.com/{user}", environ={},
                             keyring_backend=backend)  # type: ignore[arg-type]
    assert raw.reveal().startswith("go-keyring-base64:")
    plain = unique("plain")
    keyring_env.secret_tool("store", "--label=x", "service", "nono", "username", plain,
                            stdin="not-encoded")
    with pytest.raises(BadValue, match="does not start with `go-keyring-base64:`") as info:
        resolve_credential(f"keyring://nono/{plain}?decode=go-keyring", environ={},
                           keyring_backend=backend)  # type: ignore[arg-type]
    assert "not-encoded" not in str(info.value)


def test_the_default_backend_in_a_fresh_process(secret_service: SecretService) -> None:
    """What the daemon does: no backend passed, keyring picks the Secret Service from
    DBUS_SESSION_BUS_ADDRESS in the process's environment."""
    name = unique("github_token")
    value = "ghp_" + uuid.uuid4().hex
    secret_service.secret_tool("store", "--label=x", "service", "nono", "username", name,
                               "target", "default", stdin=value)
    code = ("import hashlib, sys; from nonod.credentials import resolve_credential; "
            f"s = resolve_credential({name!r}, environ={{}}); "
            "print(hashlib.sha256(s.reveal().encode()).hexdigest()); print(repr(s))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**secret_service.env, "PYTHONPATH": ":".join(sys.path)},
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    digest, shown = done.stdout.split()
    assert digest == hashlib.sha256(value.encode()).hexdigest()
    assert value not in done.stdout and "redacted" in shown


def test_nonoctl_secret_set_is_found_where_nono_looks(keyring_env: SecretService) -> None:
    chain = Keychain(secret_service_backend())  # type: ignore[arg-type]
    name = unique("openai")
    chain.set(name, Secret("sk-first"))
    chain.set(name, Secret("sk-second"))  # replaces, never duplicates
    lookup = keyring_env.secret_tool("lookup", "service", "nono", "username", name,
                                     "target", "default")
    assert (lookup.returncode, lookup.stdout) == (0, "sk-second")
    search = keyring_env.secret_tool("search", "--all", "service", "nono", "username", name)
    assert search.stdout.count("[/") == 1 or search.stderr.count("[/") == 1
    assert resolve_credential(name, environ={},
                              keyring_backend=chain.backend).reveal() == "sk-second"


def test_list_test_and_delete(keyring_env: SecretService) -> None:
    chain = Keychain(secret_service_backend())  # type: ignore[arg-type]
    names = sorted(unique(p) for p in ("alpha", "beta"))
    for name in names:
        chain.set(name, Secret("value-of-" + name))
    keyring_env.secret_tool("store", "--label=other", "service", "not-nono", "username",
                            "stranger", stdin="x")
    listed = chain.list()
    listed_names = [info.name for info in listed]
    assert set(names) <= set(listed_names) and "stranger" not in listed_names
    assert listed_names == sorted(listed_names)
    assert all("value-of" not in repr(info) for info in listed)
    assert "Secret Service" in listed[0].source
    status = chain.test(names[0])
    assert status.found and "value-of" not in repr(status)
    chain.delete(names[0])
    assert not chain.test(names[0]).found
    with pytest.raises(CredentialNotFound):
        chain.delete(names[0])
    with pytest.raises(CredentialNotFound, match="no keychain entry") as info:
        resolve_credential(names[0], environ={}, keyring_backend=chain.backend)
    assert info.value.hint is not None and "secret-tool store" in info.value.hint


def test_a_missing_secret_service_is_unavailable_not_missing(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    with pytest.raises(CredentialUnavailable, match="keychain could not be read"):
        resolve_credential("gemini", environ={},
                           keyring_backend=secret_service_backend())  # type: ignore[arg-type]


async def test_from_secret_tool_to_the_upstream(keyring_env: SecretService, pki: Pki,
                                                nursery: trio.Nursery) -> None:
    """The whole chain the daemon runs for a session: a key stored with nono's secret-tool
    command, the gitbot profile's routes, secrets loaded, a route table, the proxy, a fake
    Gemini that checks it received the real key; the program used only its environment."""
    gemini_key = "AIza-" + uuid.uuid4().hex
    github_token = "ghp_" + uuid.uuid4().hex
    for name, value in (("gemini", gemini_key), ("github_token", github_token)):
        keyring_env.secret_tool("store", f"--label=nono: {name}", "service", "nono",
                                "username", name, "target", "default", stdin=value)

    async def fake_api(request: UpstreamRequest, respond: Responder) -> None:
        real = {b"/v1beta/models": (b"x-goog-api-key", gemini_key.encode()),
                b"/repos/o/r/issues/1/labels": (b"authorization",
                                                f"Bearer {github_token}".encode())}
        header, expected = real[request.target]
        ok = request.header(header) == expected
        await respond.whole(200 if ok else 403, b"ok" if ok else b"wrong key")

    port, seen = await start_tls_upstream(nursery, pki.server, fake_api)
    github = CustomCredential(upstream="https://api.github.com", credential_key="github_token",
                              inject_header="Authorization", credential_format="Bearer {}")
    network = NetworkPolicy(restricted=True, credentials=("gemini", "github"),
                            custom_credentials=(("github", github),))
    routes = session_routes(network)
    loaded = await load_route_secrets(routes, environ={},
                                      keyring_backend=secret_service_backend())  # type: ignore[arg-type]
    assert all(route.secret is not None for route in loaded)
    token = PhantomToken.new()
    table = RouteTable(loaded, token=token, extra_ca_file=pki.ca_file, system_roots=False)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy_port = listeners[0].socket.getsockname()[1]
    pins = {"generativelanguage.googleapis.com": f"127.0.0.1:{port}",
            "api.github.com": f"127.0.0.1:{port}"}
    events: list[object] = []
    await nursery.start(functools.partial(
        serve_proxy, listeners[0], policy=ProxyPolicy(), resolver=Resolver(pins=pins),
        events=events.append, proxy_token=token.reveal(), routes=table))
    env = dict(credential_environment(routes, port=proxy_port, token=token))
    assert gemini_key not in env.values() and github_token not in env.values()

    client = Client(await trio.open_tcp_stream("127.0.0.1", proxy_port))
    base = env["GEMINI_BASE_URL"].removeprefix(f"http://127.0.0.1:{proxy_port}")
    gemini = await client.request("GET", f"{base}/v1beta/models",
                                  [("x-goog-api-key", env["GEMINI"])])
    assert (gemini.status, gemini.body) == (200, b"ok")
    client.next_cycle()
    base = env["GITHUB_BASE_URL"].removeprefix(f"http://127.0.0.1:{proxy_port}")
    labels = await client.request("POST", f"{base}/repos/o/r/issues/1/labels",
                                  [("Authorization", f"Bearer {env['GITHUB_TOKEN']}")],
                                  body=b'["bug"]')
    assert (labels.status, labels.body) == (200, b"ok")
    assert len(seen.requests) == 2
