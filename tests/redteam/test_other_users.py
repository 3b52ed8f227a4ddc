"""Red team, another local user against the system daemon: every request that names a
session, an approval, a secret or the daemon itself, sent by a second real uid about the
first uid's live session. None may act on it or tell anything about it."""

from __future__ import annotations

import grp
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, as_user, hello, raw_client, session_env

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

OWNER, INTRUDER = 65534, 1  # nobody, and Debian's `daemon` user


def _group() -> tuple[str, int]:
    for name in ("nogroup", "nobody"):
        try:
            return name, grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    pytest.fail("neither nogroup nor nobody exists")


@pytest.fixture(scope="module")
def owned_session() -> Iterator[tuple[DaemonThread, str, int]]:
    """One system daemon and one live session of OWNER for the whole module."""
    short_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    short_tmp.chmod(0o755)
    name, gid = _group()
    handle = DaemonThread(short_tmp, config=f'[daemon]\nsocket_group = "{name}"\n',
                          system=True).start()
    try:
        work = short_tmp / "work"
        work.mkdir(mode=0o777)
        launch = {"type": "launch", "argv": ["sleep", "600"], "cwd": str(work),
                  "env": session_env(work), "options": {"allow_cwd": True}, "detach": True,
                  "stdio": "pty", "name": "victim"}
        replies = [json.loads(x) for x in raw_client(handle.socket, [hello(), launch],
                                                     prefix=as_user(OWNER, gid))]
        assert replies[1]["type"] == "launched", replies
        yield handle, str(replies[1]["session"]["id"]), gid
        raw_client(handle.socket, [hello(), {"type": "stop", "session": "victim",
                                             "force": True}], prefix=as_user(OWNER, gid))
    finally:
        handle.stop()
        shutil.rmtree(short_tmp, ignore_errors=True)


def _as_intruder(handle: DaemonThread, gid: int, message: Mapping[str, object]) -> list[str]:
    return raw_client(handle.socket, [hello(), dict(message)], prefix=as_user(INTRUDER, gid),
                      timeout=30)[1:]


SESSION_REQUESTS: list[dict[str, object]] = [
    {"type": "inspect"}, {"type": "stop", "force": True}, {"type": "wait"},
    {"type": "signal", "signal": 9}, {"type": "logs"}, {"type": "logs", "tail": 10},
    {"type": "attach"}, {"type": "audit_follow", "from_start": True, "follow": False},
    {"type": "approval_list"},
]


@pytest.mark.parametrize("request_", SESSION_REQUESTS, ids=lambda r: str(r["type"]))
@pytest.mark.parametrize("by", ["id", "name"])
def test_another_user_cannot_touch_a_session_by_id_or_name(
        owned_session: tuple[DaemonThread, str, int], request_: dict[str, object],
        by: str) -> None:
    handle, session, gid = owned_session
    ref = session if by == "id" else "victim"
    reply = _as_intruder(handle, gid, {**request_, "session": ref})
    assert len(reply) == 1, reply
    answer = json.loads(reply[0])
    if request_["type"] == "approval_list":
        assert answer == {"type": "approvals", "approvals": []}
        return
    assert answer["type"] == "error" and answer["code"] == "session.not_found", answer
    # No oracle: the same answer as for a session that does not exist at all.
    absent = _as_intruder(handle, gid, {**request_, "session": "0badc0de"})
    assert reply[0].replace(ref, "0badc0de") == absent[0]


def test_another_user_sees_nothing_in_lists_status_and_prune(
        owned_session: tuple[DaemonThread, str, int]) -> None:
    handle, session, gid = owned_session
    for message in ({"type": "list", "all": True}, {"type": "approval_list"},
                    {"type": "prune"}, {"type": "status"}):
        reply = _as_intruder(handle, gid, message)
        assert session not in "".join(reply), (message, reply)
        assert "victim" not in "".join(reply), (message, reply)
    listed = json.loads(_as_intruder(handle, gid, {"type": "list", "all": True})[0])
    assert listed == {"type": "sessions", "sessions": []}
    # The owner's session is still there after the intruder's prune.
    mine = [json.loads(x) for x in raw_client(handle.socket, [hello(), {"type": "list"}],
                                              prefix=as_user(OWNER, gid))]
    assert [s["id"] for s in mine[1]["sessions"]] == [session]


def test_another_user_cannot_shut_the_system_daemon_down(
        owned_session: tuple[DaemonThread, str, int]) -> None:
    handle, _session, gid = owned_session
    reply = json.loads(_as_intruder(handle, gid, {"type": "shutdown"})[0])
    assert reply["type"] == "error", reply
    assert handle.alive()


def test_another_user_cannot_answer_or_inspect_an_approval_by_guessing(
        owned_session: tuple[DaemonThread, str, int]) -> None:
    handle, _session, gid = owned_session
    for message in ({"type": "approval_inspect", "id": "a1"},
                    {"type": "approval_answer", "id": "a1", "answer": "session"}):
        reply = json.loads(_as_intruder(handle, gid, message)[0])
        assert reply["type"] == "error", reply


def test_another_user_cannot_have_its_record_signed_with_roots_key(
        owned_session: tuple[DaemonThread, str, int], tmp_path: Path) -> None:
    """``--audit-sign-key file:///...`` named a key the daemon loaded with its own rights: a
    user of the system daemon had its session's audit record sealed with root's 0600 key
    (its ``.bundle`` said root vouched for it). Only root may choose the signing key there."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    handle, _session, gid = owned_session
    key = tmp_path / "root.key"
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    key.write_bytes(base64.b64encode(der))
    key.chmod(0o600)
    work = handle.base / "work"
    launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(work),
              "env": session_env(work), "options": {"allow_cwd": True,
                                                    "audit_sign_key": f"file://{key}"},
              "detach": True, "stdio": "null"}
    reply = json.loads(_as_intruder(handle, gid, launch)[0])
    assert (reply["type"], reply["code"]) == ("error", "auth.forbidden"), reply
    assert not list(handle.state_dir.rglob("*.bundle"))


def _free_privileged_port() -> int:
    import socket

    for port in range(900, 1000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port below 1000")


def test_another_user_cannot_have_the_daemon_bind_a_privileged_port(
        owned_session: tuple[DaemonThread, str, int]) -> None:
    """``--listen-port`` is bound on the host by the daemon: as root, for the system daemon.
    A user got 127.0.0.1:81 (a port only root may bind) forwarded to its session, and could
    stand in for a local privileged service there."""
    import socket

    handle, _session, gid = owned_session
    port = _free_privileged_port()
    work = handle.base / "work"
    launch = {"type": "launch", "argv": ["/bin/sleep", "30"], "cwd": str(work),
              "env": session_env(work), "detach": True, "stdio": "null",
              "options": {"allow_cwd": True, "listen_ports": [port],
                          "allow_domain": ["example.com"]}}
    reply = json.loads(_as_intruder(handle, gid, launch)[0])
    assert (reply["type"], reply["code"]) == ("error", "auth.forbidden"), reply
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
