"""Per-tool sandboxes end to end: a real nonod (on a thread), an agent session whose profile
names a fake ``gh`` in ``command_policies``, and a fake ``api.github.com`` (TLS, private CA)
reached through the daemon's ``[network] resolve`` pin. The agent runs ``gh``; the tool runs in
a child session with the GitHub route; the agent never holds the token."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.approvals.conftest import QuietHandler, https_server
from tests.daemon.conftest import DaemonThread
from tests.daemon.conftest import short_tmp as short_tmp  # the fixture
from tests.daemon.test_cli import CLI, cli_env
from tests.toolsandbox._fakes import private_ca, tool_dirs

pytestmark = [pytest.mark.root, pytest.mark.userns]

REAL = "ghp_REAL_0123456789abcdef_REAL"
PY = "/usr/bin/python3"

# The fake `gh`: calls its route with its phantom token, prints what it got, exits 3. As the
# real gh does, `issue direct` talks HTTPS to api.github.com itself (through HTTPS_PROXY).
FAKE_GH = f'''#!{PY}
import json, os, sys, time, urllib.request
if sys.argv[1:3] == ["issue", "view"]:
    print("viewing", flush=True)
    time.sleep(3600)
base = os.environ["GITHUB_BASE_URL"]
if sys.argv[1:3] == ["issue", "direct"]:
    base = "https://api.github.com"
request = urllib.request.Request(base + "/repos/o/r/issues",
                                 headers={{"Authorization": "Bearer " + os.environ["GH_TOKEN"]}})
with urllib.request.urlopen(request, timeout=30) as response:
    body = response.read().decode()
print(json.dumps({{"args": sys.argv[1:], "body": body, "token": os.environ["GH_TOKEN"],
                  "env": {{k: os.environ.get(k) for k in ("PATH", "HOME", "GH_REPO")}}}}))
sys.exit(3)
'''

# The agent: runs gh, tries to get around it, and tries the route itself.
AGENT = r'''
import json, os, shutil, subprocess, sys, time, urllib.error, urllib.request
gh = sys.argv[1]
out = {}
def run(*argv):
    # A file just written can be briefly busy (ETXTBSY) while the daemon's guards look at it.
    for _ in range(100):
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
            return [done.returncode, done.stdout, done.stderr]
        except OSError as exc:
            if exc.errno != 26:
                raise
            time.sleep(0.01)
    raise SystemExit("still busy")
out["list"] = run("gh", "issue", "list")
out["denied"] = run("gh", "issue", "delete", "1")
# The caller's PATH and HOME would choose what the tool runs and reads: they do not pass.
here = os.getcwd()
done = subprocess.run([gh, "issue", "list"], capture_output=True, text=True, timeout=60,
                      env={**os.environ, "PATH": here + ":/usr/bin", "HOME": here,
                           "GH_REPO": "o/r"})
out["env"] = json.loads(done.stdout)["env"]
out["own_env"] = sorted(k for k, v in os.environ.items() if "REAL" in v or k == "GH_TOKEN")
out["bytes_are_shim"] = b"nonod's tool shim" in open(gh, "rb").read()
shutil.copy(gh, "gh-copy")
os.chmod("gh-copy", 0o755)
out["copy"] = run("./gh-copy", "issue", "list")
os.symlink(gh, "gh-link")
out["link"] = run("./gh-link", "issue", "list")
out["loader"] = run("/lib64/ld-linux-x86-64.so.2", gh, "issue", "list")
with open("script", "w") as f:
    f.write("#!" + gh + "\n")
os.chmod("script", 0o755)
out["shebang"] = run("./script")
out["execveat"] = run(sys.executable, "-c",
    "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.set_inheritable(fd, True); "
    "os.execve(fd, ['gh','issue','list'], dict(os.environ))", gh)
# A call made by hand (what the shim does) with a directory of the view as stdin.
import array, socket, struct
directory = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect("/.nono-tool.sock")
body = json.dumps({"tool": "gh", "argv": ["issue", "list"], "cwd": os.getcwd(),
                   "env": {}}).encode()
conn.sendmsg([struct.pack(">I", len(body))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                               array.array("i", [directory, 1, 2]))])
conn.sendall(body)
out["dir_stdin"] = json.loads(conn.makefile().readline())
proxy = os.environ["HTTP_PROXY"].rstrip("/")
try:
    urllib.request.urlopen(urllib.request.Request(proxy + "/github/repos/o/r/issues",
        headers={"Authorization": "Bearer x"}), timeout=30)
    out["own_route"] = 200
except urllib.error.HTTPError as exc:
    out["own_route"] = exc.code
print(json.dumps(out))
'''

# The agent starts a tool, then kills its shim (SIGKILL cannot be forwarded) and stays.
AGENT_KILLS = r'''
import os, signal, subprocess, time
tool = subprocess.Popen(["gh", "issue", "view", "1"], stdout=subprocess.PIPE, text=True)
tool.stdout.readline()
os.kill(tool.pid, signal.SIGKILL)
tool.wait()
time.sleep(3600)
'''

# The agent runs calls that an `approve` rule holds for a person's answer.
AGENT_ASKS = r'''
import json, subprocess
def run(*argv):
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    return [done.returncode, done.stderr]
out = {"first": run("gh", "issue", "comment", "1"), "second": run("gh", "issue", "comment", "2"),
       "close": run("gh", "issue", "close", "1")}
print(json.dumps(out))
'''

# The agent looks for the running tool: its environment in /proc, the token's file, the
# daemon's state (where the tool session's records are).
AGENT_LOOKS = r'''
import json, os, subprocess, sys
tool = subprocess.Popen(["gh", "issue", "view", "1"], stdout=subprocess.PIPE, text=True)
out = {"first": tool.stdout.readline().strip(), "seen": [], "files": {}}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if b"GH_TOKEN=" in environ or b"GITHUB_BASE_URL=" in environ:
            out["seen"].append(pid)
for path in sys.argv[1:]:
    try:
        open(path, "rb").read()
        out["files"][path] = "read"
    except OSError as exc:
        out["files"][path] = exc.errno
tool.terminate()  # the shim forwards it to the tool
out["code"] = tool.wait()
print(json.dumps(out))
'''


@dataclass
class Upstream:
    """The fake ``api.github.com`` (TLS, a private CA): what each request carried."""

    port: int = 0
    ca_file: Path = Path()
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def github(tmp_path: Path) -> Iterator[Upstream]:
    ca, ca_file = private_ca(tmp_path)
    upstream = Upstream(ca_file=ca_file)

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            upstream.seen.append({"path": self.path, **{k.lower(): v
                                                      for k, v in self.headers.items()}})
            self.reply(200, b'[{"number": 1, "title": "first issue"}]')

    with https_server(ca, "api.github.com", Handler) as port:
        upstream.port = port
        yield upstream


def _setup(base: Path, upstream: Upstream, *, intercept: bool = False
           ) -> tuple[Path, Path, DaemonThread]:
    work, gh = tool_dirs(base, "gh", FAKE_GH)
    bindir = gh.parent
    (work / "agent.py").write_text(AGENT)
    (work / "looks.py").write_text(AGENT_LOOKS)
    (work / "kills.py").write_text(AGENT_KILLS)
    (work / "asks.py").write_text(AGENT_ASKS)
    secret = base / "github.key"
    secret.write_text(REAL + "\n")
    secret.chmod(0o600)
    profile = base / "agent.json"
    profile.write_text(json.dumps({
        "meta": {"name": "agent"},
        "filesystem": {"read": ["/usr", "/etc", "/lib", "/lib64", str(bindir)]},
        "network": {"allow_domain": ["example.invalid"],
                    **({"tls_intercept": {}} if intercept else {})},
        "command_policies": {
            "credentials": {"github": {
                "type": "proxy", "upstream": "https://api.github.com",
                "credential_key": f"file://{secret}", "env_var": "GH_TOKEN"}},
            "commands": {"gh": {"executable": str(gh), "from": {"session": {
                "sandbox": {"fs_read": ["."],
                            "network": {"allow_domain": ["api.github.com"]},
                            "environment": {"allow_vars": ["GH_REPO", "PATH", "HOME"]},
                            "credentials": [{"name": "github", "endpoint_policy": {
                                "default": "deny",
                                "allow": [{"method": "GET", "path": "/repos/*/*/issues/**"},
                                          {"method": "POST",
                                           "path": "/repos/*/*/issues/**"}]}}]},
                "invocation_policy": {
                    "default": "deny",
                    "deny": [{"argv": {"prefix": ["issue", "delete"]},
                              "reason": "agents may not delete issues"}],
                    "approve": [{"argv": {"prefix": ["issue", "comment"]},
                                 "reason": "a person reads comments first"},
                                {"argv": {"prefix": ["issue", "close"]},
                                 "timeout_secs": 60}],
                    "allow": [{"argv": {"prefix": ["issue"]}}]}}}}},
        },
    }))
    config = (f'[network]\nresolve = {{"api.github.com" = "127.0.0.1:{upstream.port}"}}\n'
              f'extra_ca_file = "{upstream.ca_file}"\n')
    return work, profile, DaemonThread(base, config=config).start()


def _audit(daemon: DaemonThread, session: str) -> list[dict[str, object]]:
    path = daemon.state_dir / "sessions" / session / "audit.ndjson"
    return [json.loads(line)["event"] for line in path.read_text().splitlines() if line]


def test_the_tool_runs_in_its_own_session_and_the_agent_never_holds_its_token(
        github: Upstream, short_tmp: Path) -> None:
    work, profile, daemon = _setup(short_tmp, github)
    gh = str(short_tmp / "bin" / "gh")
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   PY, "-S", "agent.py", gh)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        sessions = json.loads(run("ps", "--all", "--json").stdout)
    finally:
        daemon.stop()
    # The tool's output and exit status came back; it used its own phantom token.
    code, stdout, _ = out["list"]
    assert code == 3
    got = json.loads(stdout)
    assert got["args"] == ["issue", "list"] and "first issue" in got["body"]
    assert len(got["token"]) == 64 and got["token"] != REAL
    # The upstream saw the real token, never a phantom one.
    assert github.seen and all(s["authorization"] == f"Bearer {REAL}" for s in github.seen)
    # A denied argv: nono's message on the caller's stderr, non-zero, nothing ran.
    code, _, stderr = out["denied"]
    assert code == 126
    assert ("nono: tool-sandbox denied gh: Command 'gh' is blocked: agents may not delete "
            "issues") in stderr
    # The agent holds nothing of the tool's: no token in its environment, and its own
    # request to the route is refused (it has no such route).
    assert out["own_env"] == []
    # From the caller the tool gets what its allow_vars names, but never PATH or HOME (those
    # are the user's, from the agent's launch).
    assert out["env"] == {"PATH": f"{short_tmp}/bin:/usr/bin:/bin", "HOME": f"{short_tmp}-home",
                          "GH_REPO": "o/r"}
    assert out["own_route"] in (400, 403, 404)
    # Every way around the shim either goes through the child session or runs nothing.
    assert out["bytes_are_shim"]
    for way in ("copy", "link", "execveat"):
        assert out[way][0] == 3, (way, out[way])
        assert json.loads(out[way][1])["token"] != REAL
    assert out["loader"][0] != 0 and REAL not in out["loader"][1]
    assert out["shebang"][0] == 126  # the script's path is not an allowed argv
    # A directory of the agent's view is not stdio: it would let the tool walk the view.
    assert out["dir_stdin"] == {"refused": "tool-sandbox could not start gh: the stdin "
                                           "descriptor passed is a directory"}
    # ps: the tool sessions name their parent; audit on both sides.
    agent = next(s for s in sessions if s.get("parent") is None)
    children = [s for s in sessions if s.get("parent") == agent["id"]]
    assert len(children) == 5  # list, list (env), copy, link, execveat
    events = _audit(daemon, agent["id"])
    started = [e for e in events if e["type"] == "tool_started"]
    assert {e["child"] for e in started} == {c["id"] for c in children}
    assert [e["exit_code"] for e in events if e["type"] == "tool_ended"] == [3] * 5
    refused = [e for e in events if e["type"] == "tool_refused"]
    assert refused[0]["reason"] == "agents may not delete issues"
    child_events = _audit(daemon, children[0]["id"])
    assert any(e["type"] == "credential_injected" for e in child_events)
    for path in daemon.state_dir.rglob("*"):
        if path.is_file():
            assert REAL.encode() not in path.read_bytes(), path


def _children(run: CLI, agent: str) -> list[dict[str, object]]:
    return [s for s in json.loads(run("ps", "--all", "--json").stdout)
            if s.get("parent") == agent]


def _wait_child(run: CLI, agent: str, state: str) -> list[dict[str, object]]:
    """The agent's tool sessions once the first is in ``state`` (each `ps` is a round trip
    to the daemon; bounded)."""
    for _ in range(200):
        children = _children(run, agent)
        if children and children[0]["state"] == state:
            break
    return children


@pytest.mark.parametrize(("agent_argv", "force", "reason", "signal"), [
    # the shim is the agent's program: SIGTERM to it is forwarded to the tool
    (("gh", "issue", "view", "1"), False, "exited", 15),
    # the shim was killed with the agent: the daemon stops the tool session, seeing the shim
    # gone or the agent ended, whichever comes first
    (("gh", "issue", "view", "1"), True, "client_gone parent_ended", None),
    # the agent killed the shim and lives on: nobody waits for the tool, it is stopped
    ((PY, "-S", "kills.py"), None, "client_gone", None),
])
def test_the_tool_session_does_not_outlive_its_caller(
        github: Upstream, short_tmp: Path, agent_argv: tuple[str, ...], force: bool | None,
        reason: str, signal: int | None) -> None:
    """Killed, stopped or abandoned by its caller, a tool session ends with it."""
    work, profile, daemon = _setup(short_tmp, github)
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"),
                  work)
        done = run("launch", "--detach", "--profile", str(profile), "--allow-cwd", "--",
                   *agent_argv)
        assert done.returncode == 0, done.stderr
        agent = json.loads(run("ps", "--json").stdout)[0]["id"]
        if force is None:
            children = _wait_child(run, agent, "exited")
        else:
            children = _wait_child(run, agent, "running")
            assert [c["state"] for c in children] == ["running"]
            run("stop", *(["--force"] if force else []), agent)
            children = _children(run, agent)
        detail = json.loads(run("inspect", "--json", str(children[0]["id"])).stdout)
    finally:
        daemon.stop()
    assert children[0]["state"] == "exited"
    assert detail["reason"] in reason.split()
    if signal is not None:
        assert detail["signal"] == signal
        sent = [e for e in _audit(daemon, str(children[0]["id"])) if e["type"] == "signal"]
        assert sent and sent[0]["sender"] == f"session {agent}"
    ended = [e for e in _audit(daemon, str(children[0]["id"])) if e["type"] == "session_ended"]
    assert [e["reason"] for e in ended] == ["exited" if reason == "exited" else "stopped"]
    if force is not None:  # the agent's record is sealed: its tool's end is in it
        ended = [e for e in _audit(daemon, agent) if e["type"] == "tool_ended"]
        assert [e["child"] for e in ended] == [children[0]["id"]]


def test_the_agent_cannot_see_the_running_tools_token(github: Upstream, short_tmp: Path
                                                      ) -> None:
    work, profile, daemon = _setup(short_tmp, github)
    secret = short_tmp / "github.key"
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"),
                  work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--", PY, "-S",
                   "looks.py", str(secret), str(daemon.state_dir))
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["first"] == "viewing"  # the tool runs, writing to the agent's pipe
    assert out["seen"] == []  # no process the agent can see holds the tool's variables
    assert out["files"] == {str(secret): 2, str(daemon.state_dir): 2}  # not in its view
    assert out["code"] == -15


def test_a_view_without_the_shims_interpreter_refuses_the_launch(
        github: Upstream, short_tmp: Path) -> None:
    work, profile, daemon = _setup(short_tmp, github)
    data = json.loads(profile.read_text())
    data["filesystem"]["read"] = [str(short_tmp / "bin"), "/lib", "/lib64"]
    data["policy"] = {"exclude_groups": ["system_read_linux"]}  # /usr goes, python with it
    profile.write_text(json.dumps(data))
    try:
        run = CLI(cli_env(daemon.socket, short_tmp), work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   str(short_tmp / "bin" / "gh"))
        sessions = json.loads(run("ps", "--all", "--json").stdout)
    finally:
        daemon.stop()
    assert done.returncode == 125
    assert "needs /usr/bin/python3, which the session cannot run" in done.stderr
    assert sessions == []
    assert not list((daemon.state_dir / "tools").glob("*.sock"))


def _pending(run: CLI, seen: set[str]) -> dict[str, object]:
    """The next pending approval not in ``seen`` (each `approvals` is a round trip to the
    daemon; bounded)."""
    for _ in range(300):
        fresh = [a for a in json.loads(run("approvals", "--json").stdout)
                 if a["id"] not in seen]
        if fresh:
            seen.add(str(fresh[0]["id"]))
            return fresh[0]
    raise AssertionError("no approval was asked for")


def test_an_approve_rule_holds_the_call_for_a_persons_answer(
        github: Upstream, short_tmp: Path) -> None:
    work, profile, daemon = _setup(short_tmp, github)
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"),
                  work)
        agent = run.popen("launch", "--profile", str(profile), "--allow-cwd", "--", PY, "-S",
                          "asks.py")
        seen: set[str] = set()
        first = _pending(run, seen)
        assert (first["mode"], first["host"], first["path"]) == ("tool", "gh",
                                                                 "issue comment 1")
        saved = run("approve", str(first["id"]), "--save-to-profile")
        assert saved.returncode != 0 and "not a host" in saved.stderr
        assert run("approve", str(first["id"]), "--session").returncode == 0
        # `issue comment 2` passes on the session's approval: the next question is `close`.
        close = _pending(run, seen)
        assert close["path"] == "issue close 1"
        assert run("deny", str(close["id"])).returncode == 0
        stdout, stderr = agent.communicate(timeout=120)
        sessions = json.loads(run("ps", "--all", "--json").stdout)
    finally:
        daemon.stop()
    assert agent.returncode == 0, stderr
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert out["first"][0] == 3 and out["second"][0] == 3  # ran (the fake gh exits 3)
    assert out["close"] == [126, "nono: tool-sandbox denied gh: Command 'gh' is blocked: not "
                                 "approved (a person said no): matched "
                                 "invocation_policy.approve[1]\n"]
    agent_id = next(s["id"] for s in sessions if s.get("parent") is None)
    events = _audit(daemon, agent_id)
    decided = [(e["host"], e["path"], e["decision"]) for e in events
               if e["type"] == "approval" and e["stage"] == "decided"]
    assert decided == [("gh", "issue comment 1", "session"), ("gh", "issue close 1", "deny")]
    assert [e["rule"] for e in events if e["type"] == "tool_refused"] == ["approve[1]"]


@pytest.mark.skipif(importlib.util.find_spec("nonod.proxy._intercept") is None,
                    reason="TLS interception (issue 16, section 3) is not in this tree")
def test_with_tls_interception_the_tool_talks_https_to_its_host_itself(
        github: Upstream, short_tmp: Path) -> None:
    """The agent's ``tls_intercept`` carries over to the tool: a tool that cannot take a base
    URL (real ``gh``) reaches api.github.com through HTTPS_PROXY with its phantom token, and
    the upstream sees the real one."""
    work, profile, daemon = _setup(short_tmp, github, intercept=True)
    try:
        run = CLI(cli_env(daemon.socket, short_tmp, PATH=f"{short_tmp}/bin:/usr/bin:/bin"),
                  work)
        done = run("launch", "--profile", str(profile), "--allow-cwd", "--",
                   "gh", "issue", "direct")
    finally:
        daemon.stop()
    assert done.returncode == 3, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert "first issue" in got["body"] and got["token"] != REAL
    assert [s["authorization"] for s in github.seen] == [f"Bearer {REAL}"]
