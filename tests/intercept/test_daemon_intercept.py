"""TLS interception end to end: a real nonod (on a thread), a session launched with
``nonoctl launch`` that runs real ``curl`` and ``git`` over HTTPS through ``HTTPS_PROXY`` (no
base URL), and fake upstreams that the daemon reaches through its ``[network] resolve`` pins
and verifies with ``extra_ca_file`` (the operator's configuration, as in production).

The gitbot shape: ``api.github.com`` (the API, ``gh``-style) and ``github.com`` (git's smart
HTTP, served by ``git http-backend``) are credential routes of a profile with
``network.tls_intercept``; ``blind.test`` is only an allowed host and stays a blind tunnel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from tests.daemon.conftest import DaemonThread
from tests.daemon.test_cli import CLI, cli_env

pytestmark = [pytest.mark.root, pytest.mark.userns]

REAL = "ghp_REAL0123456789abcdefREAL0123456789ab"
BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

INSIDE = r'''
set -u
out() { printf '%s=%s\n' "$1" "$2"; }
out phantom "$GH_TOKEN"
api=$(curl -sS -H "Authorization: token $GH_TOKEN" https://api.github.com/user 2>&1)
out api "$api"
out api_status "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: token $GH_TOKEN" \
    https://api.github.com/user)"
out delete_status "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE \
    https://api.github.com/repos/octo/hello)"
out ls_remote "$(git ls-remote https://github.com/octo/hello.git 2>&1 | tr '\n\t' '| ')"
git clone -q https://github.com/octo/hello.git clone >/dev/null 2>&1
out clone_readme "$(cat clone/README 2>&1)"
out blind "$(curl -sS --cacert blind-ca.pem https://blind.test/ 2>&1)"
out blind_with_session_ca "$(curl -s -o /dev/null -w '%{http_code}' https://blind.test/; \
    echo " rc=$?")"
curl -s -o /dev/null --cacert upstream-ca.pem https://api.github.com/user
out pinned_rc "$?"
out raw "$(curl -sS -H 'Authorization: Bearer mine' https://raw.test/ok/file 2>&1)"
out raw_denied "$(curl -s -o /dev/null -w '%{http_code}' https://raw.test/secret)"
out bundle_tail "$(tail -c 2000 /etc/ssl/certs/ca-certificates.crt | base64 -w0)"
out env "$SSL_CERT_FILE $CURL_CA_BUNDLE $GIT_SSL_CAINFO $REQUESTS_CA_BUNDLE"
'''


@dataclass
class Fake:
    """One fake HTTPS server on a thread: what it saw, where it listens."""

    port: int = 0
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


def _handler(fake: Fake, repos: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.seen.append((self.command, self.path, headers))
            length = int(headers.get("content-length", "0") or 0)
            body = self.rfile.read(length) if length else b""
            host = headers.get("host", "")
            if host == "github.com" and ".git/" in self.path:
                self._git(body, headers)
                return
            if host == "api.github.com":
                text = json.dumps({"login": "octo", "saw": headers.get("authorization", ""),
                                   "note": f"token {REAL} reflected"})
            else:
                text = f"plain {host} {headers.get('authorization', '-')}"
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _git(self, body: bytes, headers: dict[str, str]) -> None:
            path, _, query = self.path.partition("?")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "GIT_PROJECT_ROOT": str(repos), "GIT_HTTP_EXPORT_ALL": "1",
                   "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                   "CONTENT_TYPE": headers.get("content-type", ""),
                   "CONTENT_LENGTH": str(len(body)),
                   "GIT_PROTOCOL": headers.get("git-protocol", "")}
            done = subprocess.run(["git", "http-backend"], input=body, env=env,
                                  capture_output=True, timeout=60, check=False)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status = 200
            lines = []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    lines.append((name, value.strip()))
            self.send_response(status)
            for name, value in lines:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

    return Handler


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[Fake, Fake, trustme.CA, trustme.CA, Path]]:
    """The upstream fake (``api.github.com``, ``github.com``, with a repository) and the
    blind one (``blind.test``, its own CA)."""
    base = Path(tempfile.mkdtemp(prefix="nd-", dir="/tmp"))
    base.chmod(0o755)
    repos = base / "repos"
    source = base / "src"
    for args in (["init", "-q", "-b", "main", str(source)],
                 ["-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t", "commit",
                  "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(["git", *args], check=True, timeout=60)
    (source / "README").write_text("hello from the fake\n")
    subprocess.run(["git", "-C", str(source), "add", "README"], check=True, timeout=60)
    subprocess.run(["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "-m", "readme"], check=True, timeout=60)
    (repos / "octo").mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(source),
                    str(repos / "octo" / "hello.git")], check=True, timeout=60)
    servers = []
    found = []
    cas = []
    for names in (("api.github.com", "github.com", "raw.test"), ("blind.test",)):
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        fake = Fake()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake, repos))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        fake.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        found.append(fake)
        cas.append(ca)
    yield found[0], found[1], cas[0], cas[1], base
    for server in servers:
        server.shutdown()
    shutil.rmtree(base, ignore_errors=True)


def _run(fakes: tuple[Fake, Fake, trustme.CA, trustme.CA, Path]
         ) -> tuple[dict[str, str], DaemonThread, list[dict[str, object]]]:
    upstream, blind, upstream_ca, blind_ca, base = fakes
    work = base / "work"
    work.mkdir(mode=0o755)
    (work / "inside.sh").write_text(INSIDE)
    upstream_ca.cert_pem.write_to_path(str(work / "upstream-ca.pem"))
    blind_ca.cert_pem.write_to_path(str(work / "blind-ca.pem"))
    secret = base / "gh.key"
    secret.write_text(REAL + "\n")
    secret.chmod(0o600)
    operator_ca = base / "operator-ca.pem"
    operator_ca.write_bytes(upstream_ca.cert_pem.bytes() + blind_ca.cert_pem.bytes())
    operator_ca.chmod(0o644)
    profile = base / "gitbot.json"
    route = {"credential_key": f"file://{secret}", "env_var": "GH_TOKEN",
             "credential_format": "token {}"}
    profile.write_text(json.dumps({
        "meta": {"name": "gitbot"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", "/bin"]},
        "network": {
            "allow_domain": ["blind.test", {"domain": "raw.test", "endpoints": [
                {"method": "GET", "path": "/ok/**"}]}],
            "credentials": ["github-api", "github-git"],
            "custom_credentials": {
                "github-api": {**route, "upstream": "https://api.github.com",
                               "endpoint_rules": [{"method": "GET", "path": "/user"},
                                                  {"method": "GET", "path": "/repos/*/*"}]},
                "github-git": {**route, "upstream": "https://github.com",
                               "env_var": "GIT_TOKEN",
                               "endpoint_rules": [
                                   {"method": "GET", "path": "/*/*.git/info/refs"},
                                   {"method": "POST", "path": "/*/*.git/git-upload-pack"}]},
            },
            "tls_intercept": {"ca_validity": "2h", "leaf_validity": "15m"},
        },
    }))
    pins = ", ".join(f'"{host}" = "127.0.0.1:{port}"' for host, port in (
        ("api.github.com", upstream.port), ("github.com", upstream.port),
        ("raw.test", upstream.port),
        ("blind.test", blind.port)))
    config = f'[network]\nresolve = {{{pins}}}\nextra_ca_file = "{operator_ca}"\n'
    daemon = DaemonThread(base, config=config).start()
    try:
        run = CLI(cli_env(daemon.socket, base), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--", "/bin/sh",
                   "inside.sh")
    finally:
        daemon.stop()
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert REAL not in done.stdout + done.stderr
    out = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    records = [json.loads(line)["event"] for path in daemon.state_dir.rglob("audit.ndjson")
               for line in path.read_text().splitlines() if line.strip()]
    return out, daemon, records


@pytest.fixture(scope="module")
def session(fakes: tuple[Fake, Fake, trustme.CA, trustme.CA, Path]
            ) -> tuple[dict[str, str], DaemonThread, list[dict[str, object]], Fake, Fake,
                       bytes, float]:
    before = BUNDLE.read_bytes()
    started = time.time()
    out, daemon, records = _run(fakes)
    assert BUNDLE.read_bytes() == before  # the host's trust store is never changed
    return out, daemon, records, fakes[0], fakes[1], before, started


Session = tuple[dict[str, str], DaemonThread, list[dict[str, object]], Fake, Fake, bytes,
                float]


def test_gh_and_git_get_the_real_token_the_session_only_ever_had_the_phantom(
        session: Session) -> None:
    out, _, records, upstream, _, _, _ = session
    phantom = out["phantom"]
    assert len(phantom) == 64 and phantom != REAL
    api = json.loads(out["api"])
    # The upstream saw the real token (in the route's format); the session got its phantom
    # back wherever the upstream reflected the real one.
    assert api["login"] == "octo"
    assert api["saw"] == f"token {phantom}"
    assert api["note"] == f"token {phantom} reflected"
    assert out["api_status"] == "200"
    assert "refs/heads/main" in out["ls_remote"], out["ls_remote"]
    assert out["clone_readme"] == "hello from the fake"
    assert upstream.seen
    for method, path, headers in upstream.seen:
        if headers["host"] == "raw.test":
            continue
        assert headers.get("authorization") == f"token {REAL}", (method, path)
        assert all(phantom not in value for value in headers.values())
    git = [path for _, path, h in upstream.seen if h["host"] == "github.com"]
    assert any(p.endswith("/info/refs?service=git-upload-pack") for p in git), git
    assert any(p.endswith("/git-upload-pack") for p in git), git
    intercepted = [r for r in records if r.get("type") == "network"
                   and r.get("mode") == "intercept"]
    assert {(r["method"], r["host"], r["path"], r["decision"]) for r in intercepted} >= {
        ("GET", "api.github.com", "/user", "allow"),
        ("GET", "github.com", "/octo/hello.git/info/refs", "allow"),
        ("POST", "github.com", "/octo/hello.git/git-upload-pack", "allow")}
    injected = [r for r in records if r.get("type") == "credential_injected"]
    assert {r["route"] for r in injected} == {"github-api", "github-git"}


def test_a_request_outside_the_endpoint_rules_is_refused_and_audited(
        session: Session) -> None:
    out, _, records, upstream, _, _, _ = session
    assert out["delete_status"] == "403"
    assert not [p for m, p, _ in upstream.seen if m == "DELETE"]
    denied = [r for r in records if r.get("type") == "network" and r.get("mode") == "intercept"
              and r.get("decision") == "deny" and r.get("host") == "api.github.com"]
    assert [(r["method"], r["host"], r["path"], r["reason"], r["status"]) for r in denied] == [
        ("DELETE", "api.github.com", "/repos/octo/hello", "endpoint_denied", 403)]


def test_other_hosts_stay_blind_tunnels_with_the_upstreams_own_certificate(
        session: Session) -> None:
    out, _, records, _, blind, _, _ = session
    # Verified against the blind upstream's own CA: nothing in between re-signed it.
    assert out["blind"] == "plain blind.test -"
    # The session's bundle (system roots + the session CA) does not vouch for it.
    assert out["blind_with_session_ca"] == "000 rc=60"
    assert len(blind.seen) == 1
    blind_events = [r for r in records if r.get("host") == "blind.test"]
    assert blind_events
    assert {(r["mode"], r["reason"], r["decision"]) for r in blind_events} == {
        ("connect", "allowed_host", "allow")}


def test_a_client_that_pins_its_upstream_fails_closed_and_is_audited(
        session: Session) -> None:
    out, _, records, upstream, _, _, _ = session
    assert out["pinned_rc"] == "60"  # curl: the peer's certificate is not the pinned CA's
    rejected = [r for r in records if r.get("type") == "network"
                and r.get("reason") == "client_tls_rejected"]
    assert [(r["mode"], r["host"], r["decision"], r["route"]) for r in rejected] == [
        ("connect", "api.github.com", "deny", "github-api")]
    # The pinned client's request never reached the upstream: 2 API requests, no more.
    assert len([1 for _, _, h in upstream.seen if h["host"] == "api.github.com"]) == 2


def test_the_session_ca_is_trusted_in_the_session_only_and_its_key_is_on_no_disk(
        session: Session) -> None:
    import base64

    out, daemon, _, _, _, host_bundle, started = session
    assert out["env"] == " ".join([str(BUNDLE)] * 4)
    tail = base64.b64decode(out["bundle_tail"])
    marker = b"# nonod: this session's interception CA\n"
    assert marker in tail
    ca_pem = tail.split(marker, 1)[1]
    assert ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert ca_pem not in host_bundle and marker not in host_bundle
    # The CA's key was written nowhere the daemon writes, nor in /tmp, during the session:
    # no private key in a file written since then belongs to the session CA's certificate.
    public = x509.load_pem_x509_certificate(ca_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    scanned = 0
    for root in (daemon.state_dir, Path("/tmp")):
        for path in _files(root):  # other tests may add and remove files meanwhile
            try:
                if not path.is_file() or path.stat().st_mtime < started - 1:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            scanned += 1
            for key in _private_keys(data):
                assert key.public_key().public_bytes(
                    serialization.Encoding.DER,
                    serialization.PublicFormat.SubjectPublicKeyInfo) != public, path
    assert scanned  # the daemon's own files (its audit record) were looked at
    assert hashlib.sha256(BUNDLE.read_bytes()).digest() == hashlib.sha256(host_bundle).digest()


def _files(root: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(root):  # errors (a vanished directory) are skipped
        for name in names:
            yield Path(directory, name)


def _private_keys(data: bytes) -> list[PrivateKeyTypes]:
    keys = []
    for block in re.findall(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE "
                            rb"KEY-----", data, flags=re.S):
        try:
            keys.append(serialization.load_pem_private_key(block, password=None))
        except (ValueError, TypeError):
            continue
    return keys


@pytest.fixture(autouse=True)
def _needs_tools() -> None:
    for tool in ("curl", "git"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def test_landlock_network_isolation_refuses_an_intercepting_launch() -> None:
    """No private view, so no place for the session's bundle: refused, never run without
    interception (which would hand the program nothing, or a tunnel it was not meant to
    have)."""
    base = Path(tempfile.mkdtemp(prefix="nd-", dir="/tmp"))
    try:
        base.chmod(0o755)
        work = base / "work"
        work.mkdir(mode=0o755)
        secret = base / "gh.key"
        secret.write_text(REAL + "\n")
        secret.chmod(0o600)
        profile = base / "ll.json"
        profile.write_text(json.dumps({
            "meta": {"name": "ll"}, "linux": {"sandbox_policy": "landlock"},
            "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", "/bin"]},
            "network": {"credentials": ["gh"], "tls_intercept": {}, "custom_credentials": {
                "gh": {"upstream": "https://api.github.com",
                       "credential_key": f"file://{secret}", "env_var": "GH_TOKEN"}}},
        }))
        daemon = DaemonThread(base).start()
        try:
            done = CLI(cli_env(daemon.socket, base), work)(
                "launch", "--profile", str(profile), "--allow-cwd", "--", "/bin/true")
        finally:
            daemon.stop()
        assert done.returncode != 0
        assert "tls_intercept" in done.stderr and "Landlock" in done.stderr, done.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_allow_domain_entry_with_endpoints_is_intercepted_and_filtered_without_a_credential(
        session: Session) -> None:
    out, _, records, upstream, _, _, _ = session
    # The program's own header goes through: there is no credential to put in its place.
    assert out["raw"] == "plain raw.test Bearer mine"
    assert out["raw_denied"] == "403"
    raw = [(m, p) for m, p, h in upstream.seen if h["host"] == "raw.test"]
    assert raw == [("GET", "/ok/file")]
    events = [(r["method"], r["path"], r["decision"], r["reason"]) for r in records
              if r.get("type") == "network" and r.get("mode") == "intercept"
              and r.get("host") == "raw.test"]
    assert events == [("GET", "/ok/file", "allow", "forwarded"),
                      ("GET", "/secret", "deny", "endpoint_denied")]
    assert not [r for r in records if r.get("type") == "credential_injected"
                and str(r.get("route")).startswith("allow_domain")]
