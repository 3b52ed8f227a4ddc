"""The end-to-end learn scenario: learn a small program, then run it under the proposal.

Shared by the in-process test (as the test's own user) and by the unprivileged test, which
runs this module as another uid (``python -m tests.learn.scenario BASE``) and reads the JSON
report it prints. The program (``APP``) reads a config file, writes to a cache directory,
lists a directory, runs a helper script that reads another file, listens on a port, fetches
from two hosts through the proxy (pinned to local fake servers) and tries to read an SSH key.
With ``--extra`` it also reads one file the learn run never saw.
"""

from __future__ import annotations

import functools
import os
import secrets
import sys
from pathlib import Path

import msgspec
import trio

from nonod.learn import LearnResult, learn
from nonod.profiles import ResolveContext, parse_profile, resolve
from nonod.proxy import (
    NetworkEvent,
    ProxyEvent,
    Resolver,
    child_environment,
    proxy_policy,
    serve_proxy,
)
from nonod.sandbox import LaunchRequest, open_launcher

PYTHON = "/usr/bin/python3"
HOSTS = ("alpha.learn-test.example", "beta.learn-test.example")
LISTEN_PORT = 28471

APP = r'''
import json, os, socket, subprocess, sys, urllib.request
base = sys.argv[1]
home = os.environ["HOME"]
config = json.load(open(os.path.join(home, ".config", "learnapp", "config.json")))
cache = os.path.join(base, "var", "cache", "learnapp")
os.makedirs(cache, exist_ok=True)
with open(os.path.join(cache, "state.json"), "w") as f:
    json.dump({"runs": 1}, f)
print("templates", sorted(os.listdir(os.path.join(base, "data", "templates"))), flush=True)
subprocess.run([os.path.join(base, "libexec", "helper"), base], check=True)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(config["port"])))
server.listen()
for host in config["hosts"]:
    with urllib.request.urlopen(f"http://{host}/hello", timeout=20) as response:
        print("fetched", host, response.read().decode(), flush=True)
try:
    open(os.path.join(home, ".ssh", "id_ed25519")).read()
    print("SSH KEY READ", flush=True)
except OSError as exc:
    print("ssh refused", exc.errno, flush=True)
if "--extra" in sys.argv:
    print("extra", open(os.path.join(base, "secret", "extra.txt")).read(), flush=True)
print("app done", flush=True)
'''

HELPER = """#!/bin/sh
read line < "$1/data/child.conf"
echo "helper read $line"
"""


class Report(msgspec.Struct, kw_only=True):
    """What the scenario saw, for the test to assert on."""

    result: LearnResult
    profile: str
    learn_output: str
    rerun_code: int | None
    rerun_output: str
    extra_code: int | None
    extra_output: str
    fetched: list[str]


def make_tree(base: Path) -> None:
    """The program and the files it uses, under ``base`` (not under /tmp: that is private
    in every session, learning included)."""
    (base / "home" / ".ssh").mkdir(parents=True)
    (base / "home" / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (base / "home" / ".config" / "learnapp").mkdir(parents=True)
    (base / "home" / ".config" / "learnapp" / "config.json").write_text(
        msgspec.json.encode({"port": LISTEN_PORT, "hosts": list(HOSTS)}).decode())
    (base / "work").mkdir()
    (base / "work" / "app.py").write_text(APP)
    (base / "data" / "templates").mkdir(parents=True)
    for name in ("a.tmpl", "b.tmpl"):
        (base / "data" / "templates" / name).write_text(name)
    (base / "data" / "child.conf").write_text("child-config\n")
    (base / "libexec").mkdir()
    (base / "libexec" / "helper").write_text(HELPER)
    (base / "libexec" / "helper").chmod(0o755)
    (base / "var" / "cache").mkdir(parents=True)
    (base / "secret").mkdir()
    (base / "secret" / "extra.txt").write_text("not learned\n")


def environment(base: Path) -> dict[str, str]:
    # XDG_RUNTIME_DIR points at a path that does not exist. The user's real one sits inside
    # /run/user, which is denied as well, and the engine cannot yet mask a denied path that
    # lies inside another masked one (the launch fails at the mounts step) when it exists.
    return {"HOME": str(base / "home"), "PATH": "/usr/bin:/bin",
            "XDG_RUNTIME_DIR": str(base / "run")}


async def _fake_upstream(stream: trio.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        data += chunk
    host = next((line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
                 if line.lower().startswith(b"host:")), b"?")
    body = b"hello from " + host
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode()
                          + b"\r\nConnection: close\r\n\r\n" + body)
    await stream.aclose()


async def _upstreams(nursery: trio.Nursery, seen: list[str]) -> dict[str, str]:
    pins = {}
    for host in HOSTS:
        async def handler(stream: trio.SocketStream, host: str = host) -> None:
            seen.append(host)
            await _fake_upstream(stream)

        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0,
                                                          host="127.0.0.1"))
        pins[host] = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    return pins


async def run_under_profile(profile: bytes, base: Path, args: list[str], resolver: Resolver,
                            output: Path) -> int | None:
    """Launch the program under ``profile`` as a session would: the resolved policy, the
    engine, and the filtering proxy with the profile's allowlist."""
    env = environment(base)
    ctx = ResolveContext.for_user(home=env["HOME"], workdir=str(base / "work"),
                                  uid=os.getuid(), environ=env)
    policy = resolve(parse_profile(profile, "learned"), ctx)
    token = secrets.token_hex(16)
    port = 20000 + secrets.randbelow(40000)
    events: list[ProxyEvent] = []
    with open(output, "wb") as sink, open(os.devnull, "rb") as stdin:
        async with open_launcher() as launcher, trio.open_nursery() as nursery:
            proc = await launcher.launch(
                policy,
                LaunchRequest(argv=(PYTHON, "-I", "app.py", str(base), *args),
                              cwd=str(base / "work"), env=tuple(env.items()),
                              extra_env=child_environment(port, token), proxy_port=port),
                stdio=(stdin.fileno(), sink.fileno(), sink.fileno()))
            if proc.proxy_listener is not None:
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(
                    proc.proxy_listener))
                await nursery.start(functools.partial(
                    serve_proxy, listener, policy=proxy_policy(policy.network),
                    resolver=resolver, events=events.append, proxy_token=token))
            with trio.fail_after(60):
                status = await proc.wait_exited()
            nursery.cancel_scope.cancel()
    assert all(e.decision == "allow" for e in events if isinstance(e, NetworkEvent))
    return status.code


async def run_scenario(base: Path) -> Report:
    make_tree(base)
    env = environment(base)
    fetched: list[str] = []
    learn_out = base / "learn.out"
    async with trio.open_nursery() as nursery:
        pins = await _upstreams(nursery, fetched)
        resolver = Resolver(pins=pins)
        with open(learn_out, "wb") as sink, open(os.devnull, "rb") as stdin:
            result = await learn(
                [PYTHON, "-I", "app.py", str(base)], cwd=str(base / "work"), env=env,
                timeout=60, base_profile=None, resolver=resolver,
                stdio=(stdin.fileno(), sink.fileno(), sink.fileno()))
        profile = result.to_profile("learned")
        rerun_out, extra_out = base / "rerun.out", base / "extra.out"
        rerun = await run_under_profile(profile, base, [], resolver, rerun_out)
        extra = await run_under_profile(profile, base, ["--extra"], resolver, extra_out)
        nursery.cancel_scope.cancel()
    return Report(result=result, profile=profile.decode(),
                  learn_output=learn_out.read_text(), rerun_code=rerun,
                  rerun_output=rerun_out.read_text(), extra_code=extra,
                  extra_output=extra_out.read_text(), fetched=fetched)


def main() -> None:
    report = trio.run(run_scenario, Path(sys.argv[1]))
    sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")


if __name__ == "__main__":
    main()
