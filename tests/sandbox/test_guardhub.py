"""The fork server's guard hub on its own: real inotify, real sockets, no sandbox.

A client registers the paths that matter and hands over directory descriptors; the hub wakes
it only for changes that name one of those paths, and a broken client is dropped without
touching the others.
"""

from __future__ import annotations

import os
import select
import socket
from pathlib import Path

import msgspec

from nonod.sandbox._guardhub import GuardHub


def _pump(hub: GuardHub, poller: select.poll, timeout_ms: int = 200) -> None:
    for fd, _ in poller.poll(timeout_ms):
        hub.handle(fd)


def _register(hub: GuardHub, poller: select.poll, directory: Path, on_the_way: list[str]
              ) -> socket.socket:
    client = hub.new_client()
    client.settimeout(5)
    client.sendall(b"O" + msgspec.msgpack.encode(on_the_way))
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        socket.send_fds(client, [b"W" + msgspec.msgpack.encode([str(directory)])], [fd])
    finally:
        os.close(fd)
    _pump(hub, poller)
    _pump(hub, poller)
    assert client.recv(16) == b"k"
    return client


def _woken(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(16) == b"c"
    except BlockingIOError:
        return False
    finally:
        client.settimeout(5)


def test_only_changes_on_the_way_wake_a_client(tmp_path: Path) -> None:
    poller = select.poll()
    hub = GuardHub(poller)
    assert hub.error == 0
    guarded = tmp_path / "GEMINI.md"
    guarded.write_text("x")
    client = _register(hub, poller, tmp_path, [str(tmp_path), str(guarded)])

    (tmp_path / "scratch.log").write_text("busy project")  # next to it: nobody is woken
    _pump(hub, poller)
    assert not _woken(client)

    (tmp_path / "GEMINI.md.new").write_text("y")
    os.replace(tmp_path / "GEMINI.md.new", guarded)  # over it: woken
    _pump(hub, poller)
    assert _woken(client)


def test_a_broken_client_is_dropped_and_the_others_keep_their_watches(tmp_path: Path) -> None:
    poller = select.poll()
    hub = GuardHub(poller)
    guarded = tmp_path / "rules.md"
    good = _register(hub, poller, tmp_path, [str(guarded)])
    bad = hub.new_client()
    bad.settimeout(5)
    bad.sendall(b"Wnot msgpack at all")
    _pump(hub, poller)
    assert bad.recv(16) == b""  # dropped: its outer ends its session on this

    guarded.write_text("created")
    _pump(hub, poller)
    assert _woken(good)


def test_a_client_that_goes_away_releases_its_watches(tmp_path: Path) -> None:
    poller = select.poll()
    hub = GuardHub(poller)
    first = _register(hub, poller, tmp_path, [str(tmp_path / "a")])
    second = _register(hub, poller, tmp_path, [str(tmp_path / "a")])
    first.close()
    _pump(hub, poller)
    (tmp_path / "a").write_text("x")
    _pump(hub, poller)
    assert _woken(second)  # the shared watch stayed for the one still there
    second.close()
    _pump(hub, poller)
    assert hub._by_wd == {}  # the last holder gone, the watch is removed
