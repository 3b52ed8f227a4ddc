"""Kill the sinks and the daemon at random points: afterwards every record of every session
has arrived (once per id after the receiver's dedupe), in order, and every envelope
verifies.

A real ``nonod`` ships to two receivers in this test (OTLP/HTTP and the envelope sink).
The schedule is random but seeded: each round starts the daemon, launches sessions (some
still running when it dies), waits a random moment, maybe kills or revives a receiver, then
SIGKILLs the daemon. The sessions make refused connections through the proxy (a ``network``
record each), so records are written while the daemon and the receivers die. A last
daemon runs until both cursors cover every session file.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from nonoctl.client import Connection
from nonod import protocol as p
from nonod.audit import EcdsaP256Checker, verify_envelope, verify_session_file

from ..conftest import REPO
from ..daemon.conftest import session_env, wait_pid_gone
from ..daemon.test_audit_stream import _profile as refused_connections_profile
from ._export_support import HttpReceiver, audit_lines, free_port, wait_until

logs_service = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2")

SEED = 17
ROUNDS = 5


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nono-ship-", dir="/tmp"))  # short: a socket lives here
    yield path
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(f"{path}-home", ignore_errors=True)


class Killable:
    """An HTTP receiver that can be killed (its task cancelled mid-request) and revived on
    the same port. It keeps what it received across lives."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.receiver = HttpReceiver(port=free_port(), requests=[])
        self.scope: trio.CancelScope | None = None

    async def start(self) -> None:
        if self.scope is None:
            self.scope = await self.nursery.start(self._run)

    def kill(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
            self.scope = None

    async def _run(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            await self.receiver.serve(task_status=_Relay(task_status, scope))


class _Relay:
    def __init__(self, inner: trio.TaskStatus[trio.CancelScope], scope: trio.CancelScope
                 ) -> None:
        self.inner, self.scope = inner, scope

    def started(self, value: object = None) -> None:
        self.inner.started(self.scope)


class Daemon:
    def __init__(self, base: Path, config: str) -> None:
        self.base = base
        self.socket = base / "run" / "nonod.sock"
        self.state = base / "state" / "nono"
        self.env = {**session_env(base), "PYTHONPATH": str(REPO),
                    "XDG_STATE_HOME": str(base / "state"),
                    "XDG_CONFIG_HOME": str(base / "config")}
        self.configure(config)
        self.pid = 0

    def configure(self, config: str) -> None:
        (self.base / "config" / "nono").mkdir(parents=True, exist_ok=True)
        (self.base / "config" / "nono" / "nonod.toml").write_text(config)

    def nonoctl(self, *args: str) -> str:
        env = {**self.env, "NONO_SOCKET": str(self.socket), "NONO_NO_AUTOSTART": "1"}
        done = subprocess.run([sys.executable, "-m", "nonoctl", *args], capture_output=True,
                              text=True, env=env, cwd=self.base, timeout=60, check=False)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    def start(self) -> None:
        done = subprocess.run([sys.executable, "-m", "nonod", "--daemonize", "--socket",
                               str(self.socket)], capture_output=True, text=True,
                              env=self.env, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        with Connection.open(self.socket) as conn:
            status = conn.request(p.Status())
        assert isinstance(status, p.DaemonStatus)
        self.pid = status.pid

    def launch(self, argv: tuple[str, ...], profile: Path | None = None) -> None:
        with Connection.open(self.socket) as conn:
            reply = conn.request(p.Launch(argv=argv, cwd=str(self.base),
                                          profile=str(profile) if profile else None,
                                          env=session_env(self.base), detach=True,
                                          stdio="null", options=p.LaunchOptions(allow_cwd=True)))
        assert isinstance(reply, p.Launched), reply

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid, sig)
        assert wait_pid_gone(self.pid)

    def sessions(self) -> list[str]:
        return sorted(d.name for d in (self.state / "sessions").iterdir()
                      if (d / "audit.ndjson").exists())

    def all_shipped(self) -> bool:
        sessions = self.sessions()
        for sink in ("otel", "plane"):
            try:
                cursor = json.loads((self.state / "export" / f"{sink}.json").read_bytes())
            except (FileNotFoundError, ValueError):
                return False
            if any(not cursor["sessions"].get(s, [0, False])[1] for s in sessions):
                return False
        return True


async def test_records_survive_killed_sinks_and_a_killed_daemon(base: Path) -> None:
    rng = random.Random(SEED)
    async with trio.open_nursery() as nursery:
        otel, plane = Killable(nursery), Killable(nursery)
        key_ref = f"file://{base}/config/nono/audit.key"
        profile = refused_connections_profile(base)
        daemon = Daemon(base, "")  # keygen goes through a daemon: one without export first
        await trio.to_thread.run_sync(daemon.start)
        daemon.nonoctl("trust", "keygen", "--keyref", key_ref)
        public = daemon.nonoctl("trust", "export-key", "--key", key_ref, "--pem").encode()
        await trio.to_thread.run_sync(daemon.kill, signal.SIGTERM)
        daemon.configure(
            f'[audit]\nsign_key = "{key_ref}"\n\n'
            f'[[export]]\nname = "otel"\ntype = "otlp"\n'
            f'url = "http://127.0.0.1:{otel.receiver.port}/v1/logs"\nbatch = 2\n'
            'retry_min = 0.02\nretry_max = 0.2\n\n'
            f'[[export]]\nname = "plane"\ntype = "envelope"\n'
            f'url = "http://127.0.0.1:{plane.receiver.port}/v1/envelopes"\n'
            'retry_min = 0.02\nretry_max = 0.2\n'
        )
        for _ in range(ROUNDS):
            for receiver in (otel, plane):
                await (receiver.start() if rng.random() < 0.6 else trio.lowlevel.checkpoint())
            await trio.to_thread.run_sync(daemon.start)
            for _ in range(rng.randint(1, 2)):  # one record per refused connection
                argv = ("/usr/bin/python3", "-S", "refused.py", str(rng.randint(20, 400)))
                await trio.to_thread.run_sync(daemon.launch, argv, profile)
            if rng.random() < 0.5:  # left running: the next daemon seals it (daemon_lost)
                await trio.to_thread.run_sync(daemon.launch, ("sleep", "600"))
            await trio.sleep(rng.uniform(0, 0.4))  # a random moment, not a synchronisation
            for receiver in (otel, plane):
                if rng.random() < 0.3:
                    receiver.kill()
            await trio.sleep(rng.uniform(0, 0.2))
            await trio.to_thread.run_sync(daemon.kill)
        await otel.start()
        await plane.start()
        await trio.to_thread.run_sync(daemon.start)
        try:
            await wait_until(daemon.all_shipped, timeout=30, what="every session shipped")
        finally:
            await trio.to_thread.run_sync(daemon.kill, signal.SIGTERM)
        nursery.cancel_scope.cancel()

    sessions = daemon.sessions()
    assert len(sessions) >= ROUNDS
    lost = [s for s in sessions if b'"reason":"daemon_lost"' in
            (daemon.state / "sessions" / s / "audit.ndjson").read_bytes()]
    assert lost  # the kills did land while sessions were writing
    # OTLP: dedupe by id, keep the first copy; per session the first copies are the file.
    first: dict[str, dict[int, bytes]] = {}
    order: dict[str, list[int]] = {}
    copies = 0
    assert otel.receiver.requests is not None
    for request in otel.receiver.requests:
        message = logs_service.ExportLogsServiceRequest.FromString(request.body)
        for log in message.resource_logs[0].scope_logs[0].log_records:
            attrs = {kv.key: kv.value for kv in log.attributes}
            session, seq = attrs["nono.session"].string_value, attrs["nono.seq"].int_value
            assert attrs["nono.record.id"].string_value == f"{session}:{seq}"
            copies += 1
            line = log.body.string_value.encode()
            if seq in first.setdefault(session, {}):
                assert first[session][seq] == line  # a copy is the same record
                continue
            first[session][seq] = line
            order.setdefault(session, []).append(seq)
    for session in sessions:
        path = daemon.state / "sessions" / session / "audit.ndjson"
        stored = audit_lines(path)
        assert order[session] == list(range(1, len(stored) + 1)), session  # in order
        assert [first[session][n] for n in order[session]] == stored
        verify_session_file(path, ledger=daemon.state / "ledger.ndjson")
    # Envelopes: one per session after dedupe by id, each verifies with the daemon's key.
    checker = EcdsaP256Checker.from_pem(public)
    envelopes: dict[str, bytes] = {}
    assert plane.receiver.requests is not None
    for request in plane.receiver.requests:
        envelope_id = request.headers["idempotency-key"]
        assert json.loads(request.body)["id"] == envelope_id
        envelopes.setdefault(envelope_id, request.body)
    by_session = {json.loads(body)["session"]: body for body in envelopes.values()}
    assert sorted(by_session) == sessions and len(envelopes) == len(sessions)
    for session, body in by_session.items():
        result = verify_envelope(body, checker=checker)
        assert result.signature == "verified"
        assert [r.encode() for r in json.loads(body)["records"]] == audit_lines(
            daemon.state / "sessions" / session / "audit.ndjson")
    print(f"{len(sessions)} sessions ({len(lost)} daemon_lost), "
          f"{sum(len(v) for v in first.values())} records, "
          f"{copies} OTLP copies received, {len(plane.receiver.requests)} envelope posts")
