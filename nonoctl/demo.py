"""``make demo``: the seed's gitbot walkthrough, end to end, offline, on this machine.

1. a throw-away world: a fake home with a fake ``~/.ssh/id_ed25519``, the gitbot project;
2. a real Secret Service (gnome-keyring on a private D-Bus bus) holding the two API keys,
   stored with ``secret-tool`` exactly as nono's documentation says;
3. fake api.github.com and generativelanguage.googleapis.com (local TLS servers) that check
   they receive the REAL keys;
4. ``nonod`` in the foreground, its ``nonod.toml`` pinning those two names to the fakes;
5. ``nonoctl launch gitbot -d --allow-cwd --listen-port ... --proxy-credential gemini
   --proxy-credential github -- python3 bot.py``;
6. a signed ``issues.opened`` webhook: the bot triages it through nonod's credential proxy,
   the fakes see the real keys, the bot only ever holds phantom tokens;
7. the bot's debug endpoints: ``~/.ssh`` is out of reach, the token it sees is a phantom;
8. ``nonoctl ps``, ``stop``, ``audit show`` and ``audit verify``; then everything is torn down.

Each expectation prints ``[ok]`` or ``[FAIL]``; the exit status is 0 only if all held.
Everything is stopped and removed on the way out, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import signal
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import trio

from . import _demo_http as _http
from . import _demo_keyring as _keyring
from . import _demo_procs as _procs
from . import _demo_upstreams as _upstreams
from . import _demo_world as _world
from ._demo_report import DemoError, Story

# Fake, but shaped like the real thing, and easy to spot if they ever leaked.
GEMINI_KEY = "AIzaSy-NONO-DEMO-real-gemini-key-000000"
GITHUB_TOKEN = "ghp_NONODEMOrealGitHubToken0000000000000"  # noqa: S105
WEBHOOK_SECRET = "demo-webhook-secret"  # noqa: S105
REPO_NAME = "octo-org/hello-nono"
ISSUE = {"number": 42, "title": "Crash when GEMINI.md is empty",
         "body": "Steps: empty GEMINI.md, open an issue. The bot answers 502.",
         "user": {"login": "first-timer"}}
PHANTOM = re.compile(r"[0-9a-f]{64}")


@dataclass
class Scene:
    """What the steps share."""

    story: Story
    world: _world.World
    python: str
    port: int = 0
    session: str = ""
    phantom: str = ""

    def cli_env(self) -> dict[str, str]:
        """The environment nonoctl runs with: the fake home, and no API key anywhere."""
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.world.home),
                "LANG": "C.UTF-8", "NONO_SOCKET": str(self.world.socket),
                "NONO_NO_AUTOSTART": "1"}

    async def nonoctl(self, *args: str, cwd: Path | None = None, show: bool = True,
                      limit: int = 40) -> _procs.Done:
        self.story.command(["nonoctl", *args])
        done = await _procs.run(_procs.python_module("nonoctl", *args), env=self.cli_env(),
                                cwd=cwd or self.world.project)
        if show:
            self.story.output(done.stdout + done.stderr, limit=limit)
        return done

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


# ---------------------------------------------------------------------------------- the steps


def step_world(story: Story, world: _world.World, python: str) -> Scene:
    story.step("A throw-away world: a fake home with an SSH key, and the gitbot project")
    story.say(f"$DEMO = {world.base}")
    story.abbreviate(str(world.base))
    scene = Scene(story, world, python)
    scene.port = _world.pick_port(5001)
    _world.write_dotenv(world, port=scene.port, webhook_secret=WEBHOOK_SECRET, repo=REPO_NAME)
    story.say(f"fake HOME     {world.home}  (~/.ssh/id_ed25519: a fake private key)")
    story.say(f"project       {world.project}  (bot.py and GEMINI.md from examples/gitbot)")
    story.say(f"project .env  WEBHOOK_SECRET, GITHUB_REPO={REPO_NAME}, PORT={scene.port}  "
              "(no API key)")
    return scene


async def step_keyring(scene: Scene, stack: AsyncExitStack) -> _keyring.SecretService:
    story = scene.story
    story.step("Real keys go into a real Secret Service (gnome-keyring on a private D-Bus bus)")
    story.command(["dbus-run-session", "--", "gnome-keyring-daemon", "--unlock",
                   "--components=secrets"], note="throw-away password on stdin")
    service = await stack.enter_async_context(
        _keyring.open_secret_service(scene.world.keyring_home))
    story.say(f"DBUS_SESSION_BUS_ADDRESS={service.address}")
    for name, value in (("gemini", GEMINI_KEY), ("github_token", GITHUB_TOKEN)):
        argv = await service.store(name, value)
        story.command(argv, note=f"stdin: {value}")
    found = await _procs.run(["secret-tool", "search", "--all", "service", "nono"], env=service.env)
    names = set(re.findall(r"^attribute\.username = (\S+)$", found.stdout + found.stderr,
                           re.MULTILINE))
    story.check("the keyring holds gemini and github_token under service nono",
                {"gemini", "github_token"} <= names, f"found {sorted(names)}")
    return service


async def step_upstreams(scene: Scene, nursery: trio.Nursery) -> _upstreams.Upstreams:
    story = scene.story
    story.step("Fake upstreams: local TLS servers standing in for the two APIs")
    upstreams = _upstreams.make_upstreams(gemini_key=GEMINI_KEY, github_token=GITHUB_TOKEN)
    await _upstreams.start_upstreams(nursery, upstreams, str(scene.world.ca_file))
    for fake, expects in ((upstreams.github, f"Authorization: Bearer {GITHUB_TOKEN}"),
                          (upstreams.gemini, f"x-goog-api-key: {GEMINI_KEY}")):
        story.say(f"{fake.host:<34} https://127.0.0.1:{upstreams.ports[fake.host]}  "
                  f"(401 unless {expects})")
    story.say(f"their certificates come from a throw-away CA: {scene.world.ca_file}")
    return upstreams


async def step_daemon(scene: Scene, stack: AsyncExitStack, service: _keyring.SecretService,
                      upstreams: _upstreams.Upstreams) -> _procs.Daemon:
    story = scene.story
    world = scene.world
    story.step("nonod in the foreground, with its own socket, state and nonod.toml")
    config = _world.write_config(world, upstreams.pins())
    story.say(f"{world.config}:")
    story.output(config)
    argv = ["nonod", "--config", str(world.config)]
    story.command([f"DBUS_SESSION_BUS_ADDRESS={service.address}", *argv])
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(world.home),
           "LANG": "C.UTF-8", "DBUS_SESSION_BUS_ADDRESS": service.address}
    daemon = await stack.enter_async_context(_procs.open_daemon(
        _procs.python_module("nonod", *argv[1:]), env=env, notify_path=world.notify_socket,
        log=world.daemon_log))
    story.check(f"nonod is ready (pid {daemon.pid}: READY=1 on its NOTIFY_SOCKET; log in "
                f"{world.daemon_log})", True)
    done = await scene.nonoctl("secret", "list")
    story.check("nonod reads the demo keyring: both secrets are listed",
                "gemini" in done.stdout and "github_token" in done.stdout,
                done.stderr.strip())
    return daemon


async def step_launch(scene: Scene) -> None:
    story = scene.story
    story.step("Launch the bot in a sandbox, its API keys replaced by phantom tokens")
    done = await scene.nonoctl("profile", "show", "gitbot", show=False)
    try:
        profile = json.loads(done.stdout)
    except ValueError:
        story.output(done.stdout + done.stderr)
    else:
        story.output("\n".join(f"{json.dumps(key)}: {json.dumps(value)}"
                                for key, value in profile.items()))
    story.say("(the seed's gitbot-profile.json, built in; shown one key a line)")
    story.command(["cd", str(scene.world.project)])
    done = await scene.nonoctl("launch", "gitbot", "-d", "--allow-cwd", "--listen-port",
                               str(scene.port), "--proxy-credential", "gemini",
                               "--proxy-credential", "github", "--", scene.python, "bot.py")
    ids = re.findall(r"\b[0-9a-f]{8}\b", done.stdout)
    if done.code != 0 or not ids:
        log = _procs.log_tail(scene.world.daemon_log)
        raise DemoError(f"the launch failed (exit {done.code}): {done.stderr.strip()}\n"
                        f"the end of nonod's log:\n{log}")
    scene.session = ids[0]
    story.say("nonod resolved the profile for this caller, read gemini and github_token from "
              "the keychain\ninto the session's proxy, and gave the bot phantom tokens (GEMINI, "
              "GITHUB_TOKEN)\nand GEMINI_BASE_URL / GITHUB_BASE_URL pointing at that proxy.")
    story.check(f"the bot answers on 127.0.0.1:{scene.port} (forwarded into the session)",
                await _http.wait_answers(scene.url("/")))


async def step_webhook(scene: Scene, upstreams: _upstreams.Upstreams) -> None:
    story = scene.story
    story.step("A signed issues.opened webhook: the bot triages issue #42")
    payload = json.dumps({"action": "opened", "issue": ISSUE,
                          "repository": {"full_name": REPO_NAME}}).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), payload,
                                     hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "issues",
               "X-Hub-Signature-256": signature}
    story.request("POST", scene.url("/"), note="X-GitHub-Event: issues, "
                  f"X-Hub-Signature-256: {signature[:19]}...")
    reply = await _http.fetch(scene.url("/"), payload, headers)
    story.output(f"{reply.status} {reply.text()}")
    story.check("the bot triaged the issue and labelled it 'bug' (200)",
                reply.status == 200 and reply.json().get("label") == "bug")

    gemini = upstreams.gemini.received
    story.say(f"fake Gemini received {len(gemini)} request(s):")
    for seen in gemini:
        story.output(f"{seen.method} {seen.path}  x-goog-api-key: {seen.credential}")
    story.check("fake Gemini received the REAL key in x-goog-api-key (injected by nonod)",
                bool(gemini) and all(s.authorized for s in gemini))

    github = upstreams.github.received
    story.say(f"fake GitHub received {len(github)} request(s):")
    for seen in github:
        story.output(f"{seen.method} {seen.path}  Authorization: {seen.credential}")
        story.output(f"    {seen.body.decode(errors='replace')[:90]}")
    base = f"/repos/{REPO_NAME}/issues/{ISSUE['number']}"
    paths = {(s.method, s.path) for s in github if s.authorized}
    story.check("fake GitHub got the label and the comment, with 'Bearer <the REAL token>'",
                {("POST", f"{base}/labels"), ("POST", f"{base}/comments")} <= paths
                and all(s.authorized for s in github))

    story.request("POST", scene.url("/"), note="X-Hub-Signature-256: sha256=<wrong>")
    forged = await _http.fetch(scene.url("/"), payload, {**headers, "X-Hub-Signature-256":
                                                  "sha256=" + "0" * 64})
    story.output(f"{forged.status} {forged.text()}")
    story.check("a webhook with a wrong signature is refused (401)", forged.status == 401)


async def step_debug(scene: Scene) -> None:
    story = scene.story
    story.step("What the bot itself can see: phantom tokens, and no ~/.ssh")
    story.request("GET", scene.url("/debug/show-token"))
    shown = await _http.fetch(scene.url("/debug/show-token"))
    token = scene.phantom = str(shown.json().get("token", ""))
    short = {"token_seen_by_process": shown.json().get("token_seen_by_process")}
    story.output(f"{shown.status} {json.dumps(short)}")
    story.say(f"in full: {token}")
    story.check("the bot's GITHUB_TOKEN is a 64-hex phantom token, not the real one",
                PHANTOM.fullmatch(token) is not None and token != GITHUB_TOKEN,
                f"got {token!r}")

    story.request("GET", scene.url("/debug/environ"))
    environ = (await _http.fetch(scene.url("/debug/environ"))).json()
    for name in ("GITHUB_TOKEN", "GITHUB_BASE_URL", "GEMINI", "GEMINI_BASE_URL"):
        story.output(f"{name}={environ.get(name, '(unset)')}")
    values = [str(v) for v in environ.values()]
    story.check("no variable of the bot holds a real key; GEMINI is a phantom token too",
                bool(environ) and not any(GITHUB_TOKEN in v or GEMINI_KEY in v for v in values)
                and PHANTOM.fullmatch(str(environ.get("GEMINI", ""))) is not None)

    lines = _command_lines()
    leaks = [pid for pid, args in lines if GITHUB_TOKEN in args or GEMINI_KEY in args]
    story.check(f"none of the {len(lines)} command lines on this machine (what `ps aux` shows) "
                "holds a real key", not leaks, f"pids {leaks}")

    story.request("GET", scene.url("/debug/read-ssh"))
    ssh = await _http.fetch(scene.url("/debug/read-ssh"))
    story.output(f"{ssh.status} {ssh.text()}")
    why = {"No such file or directory": "ENOENT: not in the session's view",
           "Permission denied": "EACCES: masked"}.get(str(ssh.json().get("error")), "")
    story.check(f"~/.ssh/id_ed25519 exists on the host, yet the bot gets 403 ({why})",
                scene.world.ssh_key.is_file() and ssh.status == 403 and bool(why))


def _command_lines() -> list[tuple[int, str]]:
    """(pid, command line) of every process we may see (what ``ps ax`` shows)."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile, or hidden from us
            lines.append((int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")))
    return lines


async def step_wrap_up(scene: Scene, daemon: _procs.Daemon) -> None:
    story = scene.story
    story.step("ps, stop, and the session's audit record")
    done = await scene.nonoctl("ps")
    story.check("nonoctl ps lists the running session", scene.session in done.stdout)
    done = await scene.nonoctl("stop", scene.session)
    story.check("nonoctl stop ends it", done.code == 0, done.stderr.strip())
    story.say("(stopped first: verify checks the record sealed at the session's end)")
    state = str(scene.world.state_dir)
    done = await scene.nonoctl("audit", "show", scene.session, "--state-dir", state, limit=30)
    story.check("the audit record shows the credential injections",
                done.code == 0 and "credential_injected" in done.stdout, done.stderr.strip())
    record = await scene.nonoctl("audit", "show", scene.session, "--state-dir", state,
                                 "--json", show=False)
    secrets = [GITHUB_TOKEN, GEMINI_KEY, *([scene.phantom] if scene.phantom else [])]
    story.check("it names the credentials, never a real key or the phantom token",
                record.code == 0 and bool(record.stdout)
                and not any(secret in record.stdout for secret in secrets))
    done = await scene.nonoctl("audit", "verify", scene.session, "--state-dir", state)
    story.check("nonoctl audit verify: the hash chain is intact and sealed",
                done.code == 0 and done.stdout.startswith("OK"), done.stderr.strip())
    story.command(["kill", "-TERM", str(daemon.pid)], note="stop nonod")
    code = await daemon.stop()
    story.check("nonod shut down cleanly (exit 0)", code == 0, f"exit status {code}")


# ------------------------------------------------------------------------------------- the run


async def tell(story: Story, python: str) -> None:
    world = _world.make_world()
    try:
        scene = step_world(story, world, python)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, story, nursery.cancel_scope)
            async with AsyncExitStack() as stack:
                service = await step_keyring(scene, stack)
                upstreams = await step_upstreams(scene, nursery)
                daemon = await step_daemon(scene, stack, service, upstreams)
                await step_launch(scene)
                await step_webhook(scene, upstreams)
                await step_debug(scene)
                await step_wrap_up(scene, daemon)
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(world.base, ignore_errors=True)
    story.check("the keyring, its bus and the fake APIs are stopped, and $DEMO is removed",
                not world.base.exists())


async def _stop_on_signal(story: Story, scope: trio.CancelScope) -> None:
    """SIGTERM or SIGHUP: stop the story, with the same teardown as after a failure (Ctrl-C
    raises KeyboardInterrupt, which does the same)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            story.fail(f"stopped by {signal.Signals(signum).name}")
            scope.cancel()
            return


def preflight() -> str | None:
    """What the demo needs from this machine; a message saying what is missing, or None."""
    missing = _keyring.missing_tools()
    if missing:
        return (f"{', '.join(missing)} not found: the demo needs a Secret Service.\n"
                f"  install: sudo apt-get install -y {_keyring.APT_PACKAGES}"
                "   (make demo does this when run as root)")
    try:
        import trustme  # noqa: F401
    except ImportError:
        return ("the Python package trustme is missing (the fake upstreams' certificates).\n"
                "  install: pip install -e '.[dev]'   (make demo does this)")
    return None


def main() -> int:
    story = Story()
    problem = preflight()
    if problem is not None:
        print(f"nono demo: {problem}", file=sys.stderr)
        return 1
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (
        shutil.which("python3") or sys.executable)
    started = time.monotonic()
    story.title("nono demo: the seed's gitbot walkthrough, offline, with a real nonod, a real "
                "keyring and fake APIs")
    try:
        trio.run(tell, story, python)
    except* DemoError as group:
        for error in _leaves(group):
            story.fail("the demo could not go on", str(error))
    except* KeyboardInterrupt:
        story.fail("interrupted")
    elapsed = time.monotonic() - started
    story.title("")
    if story.failed:
        story.title(f"nono demo: FAILED: {len(story.failed)} of "
                    f"{len(story.failed) + story.passed} checks ({elapsed:.1f} s)")
        return 1
    story.title(f"nono demo: all {story.passed} checks passed ({elapsed:.1f} s); "
                "everything it started is stopped and removed")
    return 0


def _leaves(group: BaseExceptionGroup[DemoError]) -> list[DemoError]:
    out: list[DemoError] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out

if __name__ == "__main__":
    sys.exit(main())
