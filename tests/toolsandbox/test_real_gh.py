"""The shipped gitbot with the real ``gh`` (Debian's, installed by ``make system-deps``): a real
nonod (on a thread), the agent launched with examples/gitbot/gitbot-tools.json (a copy that
differs only in where the token is read from), and a fake ``api.github.com`` (TLS, a private
CA) that the daemon reaches through its ``[network] resolve`` pin. ``gh`` runs as a tool
session, talks HTTPS to api.github.com itself through HTTPS_PROXY, is intercepted, and the
fake sees the real token; the agent never can."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.approvals.conftest import QuietHandler, https_server
from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.test_cli import CLI, cli_env
from tests.toolsandbox._fakes import private_ca

pytestmark = [pytest.mark.root, pytest.mark.userns]

REAL = "ghp_REALgh0123456789abcdefREAL0123456789"
GH = "/usr/bin/gh"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gitbot" / "gitbot-tools.json"

# What the bot does: the two calls the example allows, one it does not (DELETE), one outside
# issues/**, then the agent's own tries at the token with curl.
AGENT = r'''
set -u
out() { printf '%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n' ' ')"; }
out list "$(gh api repos/octo/hello/issues 2>&1; echo " rc=$?")"
out comment "$(gh api -X POST repos/octo/hello/issues/1/comments -f body=hello 2>&1; \
    echo " rc=$?")"
out delete "$(gh api -X DELETE repos/octo/hello/issues/1/comments/7 2>&1; echo " rc=$?")"
out outside "$(gh api repos/octo/hello/pulls 2>&1; echo " rc=$?")"
out own_env "$(env | grep -c -e GH_TOKEN -e REAL)"
out own_direct "$(curl -s -o /dev/null -w '%{http_code}' https://api.github.com/user; \
    echo " rc=$?")"
out own_route "$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' \
    -H "Proxy-Authorization: Bearer $NONO_PROXY_TOKEN" -H 'Authorization: Bearer x' \
    "http://127.0.0.1:${HTTP_PROXY##*:}/github/repos/octo/hello/issues")"
'''


@dataclass
class Upstream:
    """The fake ``api.github.com``: each request's method, path, body and headers."""

    port: int = 0
    ca_file: Path = Path()
    seen: list[tuple[str, str, str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def github(tmp_path: Path) -> Iterator[Upstream]:
    ca, ca_file = private_ca(tmp_path)
    upstream = Upstream(ca_file=ca_file)

    class Handler(QuietHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            upstream.seen.append((self.command, self.path, body,
                                  {k.lower(): v for k, v in self.headers.items()}))
            if self.command == "POST":
                self.reply(201, json.dumps({"id": 7, "body": json.loads(body)["body"]})
                           .encode())
            else:
                self.reply(200, b'[{"number": 1, "title": "first issue"}]')

        do_GET = do_POST = do_DELETE = _answer

    with https_server(ca, "api.github.com", Handler) as port:
        upstream.port = port
        yield upstream


def _profile(base: Path) -> Path:
    """The shipped example, its token read from a file instead of the keyring and without
    the bot's own Gemini route (no Gemini key on a test machine)."""
    secret = base / "github.key"
    secret.write_text(REAL + "\n")
    secret.chmod(0o600)
    data = json.loads(EXAMPLE.read_text())
    data["command_policies"]["credentials"]["github"]["credential_key"] = f"file://{secret}"
    assert data["command_policies"]["commands"]["gh"]["executable"] == GH
    data["network"].pop("proxy_credentials")
    profile = base / "gitbot-tools.json"
    profile.write_text(json.dumps(data))
    return profile


@pytest.fixture(autouse=True)
def _needs_gh() -> None:
    if shutil.which("gh") is None or shutil.which("curl") is None:
        pytest.skip("gh or curl is not installed (make system-deps installs both as root)")


def test_the_real_gh_reaches_the_api_as_a_tool_session_and_the_agent_never_holds_its_token(
        github: Upstream, short_tmp: Path) -> None:
    work = short_tmp / "work"
    work.mkdir(mode=0o755)
    (work / "bot.sh").write_text(AGENT)
    profile = _profile(short_tmp)
    config = (f'[network]\nresolve = {{"api.github.com" = "127.0.0.1:{github.port}"}}\n'
              f'extra_ca_file = "{github.ca_file}"\n')
    daemon = DaemonThread(short_tmp, config=config).start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp), work)
        dry = run("launch", "--dry-run", "--profile", str(profile), "--allow-cwd", "--",
                  "/bin/sh", "bot.sh")
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--", "/bin/sh",
                   "bot.sh")
        sessions = json.loads(run("ps", "--all", "--json").stdout)
        inspected = {str(s["id"]): json.loads(run("inspect", "--json", str(s["id"])).stdout)
                     for s in sessions}
        shown = {str(s["id"]): run("inspect", str(s["id"])).stdout for s in sessions}
    finally:
        daemon.stop()
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert REAL not in done.stdout + done.stderr
    # gh's own requests reached the fake with the real token in the route's format.
    assert "first issue" in out["list"] and out["list"].endswith("rc=0"), out["list"]
    assert '"body":"hello"' in out["comment"].replace(" ", "") and \
        out["comment"].endswith("rc=0"), out["comment"]
    assert [(m, p, b) for m, p, b, _ in github.seen] == [
        ("GET", "/repos/octo/hello/issues", ""),
        ("POST", "/repos/octo/hello/issues/1/comments", '{"body":"hello"}')]
    assert all(h["authorization"] == f"Bearer {REAL}" for *_, h in github.seen)
    # DELETE and a path outside issues/** were refused by the proxy: gh saw a 403.
    for name in ("delete", "outside"):
        assert "HTTP 403" in out[name] and not out[name].endswith("rc=0"), out[name]
    # The agent holds no token and no way to one.
    assert out["own_env"] == "0"
    # Its CONNECT to api.github.com is refused (not one of its hosts), and its proxy has no
    # route to ask for (the agent has no credential route at all).
    assert out["own_direct"] == "000 rc=56", out["own_direct"]
    assert out["own_route"] in ("400", "403", "404"), out["own_route"]
    # Four tool sessions under the agent; the audit on both sides.
    agent = next(s for s in sessions if s.get("parent") is None)
    children = [s for s in sessions if s.get("parent") == agent["id"]]
    assert len(children) == 4
    own = [json.loads(line)["event"] for line in (
        daemon.state_dir / "sessions" / str(agent["id"]) / "audit.ndjson"
    ).read_text().splitlines() if line]
    assert [(e["mode"], e["host"], e["decision"], e["reason"]) for e in own
            if e["type"] == "network" and e["host"]] == [
        ("connect", "api.github.com", "deny", "not_allowed")]
    assert not [e for e in own if e["type"] == "credential_injected"]
    assert [e["child"] for e in own if e["type"] == "tool_started"] == \
        [c["id"] for c in sorted(children, key=lambda c: str(c["started_at"]))]
    records = [json.loads(line)["event"]
               for child in children
               for line in (daemon.state_dir / "sessions" / str(child["id"]) /
                            "audit.ndjson").read_text().splitlines() if line]
    intercepted = {(r["method"], r["path"], r["decision"]) for r in records
                   if r.get("type") == "network" and r.get("mode") == "intercept"}
    assert intercepted == {
        ("GET", "/repos/octo/hello/issues", "allow"),
        ("POST", "/repos/octo/hello/issues/1/comments", "allow"),
        ("DELETE", "/repos/octo/hello/issues/1/comments/7", "deny"),
        ("GET", "/repos/octo/hello/pulls", "deny")}
    assert [r["route"] for r in records if r.get("type") == "credential_injected"] == \
        ["github", "github"]
    # Which hosts are intercepted: gh's sessions api.github.com; the bot's own none (its
    # allowed hosts stay blind tunnels). The dry run says so before anything runs.
    assert {c["id"]: inspected[c["id"]]["intercepts"] for c in children} == {
        c["id"]: ["api.github.com"] for c in children}
    assert inspected[agent["id"]].get("intercepts", []) == []
    assert all(re.search(r"tls intercept\s+api\.github\.com", shown[c["id"]]) for c in children)
    assert "tls intercept" not in shown[agent["id"]]
    assert dry.returncode == 0, dry.stderr
    assert "gh (/usr/bin/gh): hosts api.github.com; routes github; intercepts TLS of " \
        "api.github.com; argv rules" in dry.stdout, dry.stdout
    for path in daemon.state_dir.rglob("*"):
        if path.is_file():
            assert REAL.encode() not in path.read_bytes(), path
