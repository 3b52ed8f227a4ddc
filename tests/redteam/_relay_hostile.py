"""Hostile peers against the pump with ``relay.c`` built with ASan and UBSan (run by
``test_relay_hostile_peers.py`` in a process of its own, the sanitizer runtimes preloaded).

``python -m tests.redteam._relay_hostile LIBRARY SEED TUNNELS``: ``TUNNELS`` tunnels of a
pump (``_pump._Pump(native=True)`` on ``LIBRARY``; ``python``: Python's loop alone), at most
48 at once, each
between a client and an upstream that follow a script drawn from ``SEED``: messages of 1 byte
to 200 KiB (64 KiB and around it: relay.c's full read), half-closes, resets in the middle
of a message, readers that stall under small socket buffers (relay.c's short writes),
sockets moved to high descriptor numbers (its table's growth) and numbers reused at once by
the next tunnel. Checked for each tunnel: every byte arrives in order (a prefix where a side
reset), the end of file after them, the tunnel ends once both sides ended or one reset, and
its counts are the bytes each side sent. Prints ``ok TUNNELS`` and exits 0; a failed check
exits 1 with what failed, a sanitizer report aborts the process.
"""

from __future__ import annotations

import ctypes
import os
import random
import resource
import socket
import struct
import sys
import threading
import time
from pathlib import Path

from nonod.proxy import _pump
from nonod.proxy._pump import Tunnel, _Pump

#: The longest a tunnel may take from its peers' last action to its end.
_DEADLINE = 20.0
_SIZES = (1, 2, 7, 100, 1400, 4096, 65535, 65536, 65537, 131072, 200_000)


def _load(library: str) -> None:
    """The pump's loop on ``library`` (the sanitized build) instead of the one beside it."""
    lib = _pump.prototyped(ctypes.CDLL(library))
    bare = ctypes.CDLL(library)
    _pump._native = lambda: lib  # type: ignore[assignment]
    _pump._unprototyped = lambda: bare  # type: ignore[assignment]


def _tcp_pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    outer = socket.create_connection(listener.getsockname())
    inner, _ = listener.accept()
    return outer, inner


class Side:
    """One peer of a tunnel (the client, or the upstream) and its script."""

    def __init__(self, sock: socket.socket, rng: random.Random, name: str) -> None:
        self.sock = sock
        self.name = name
        self.sock.setblocking(False)
        self.data = rng.randbytes(sum(rng.choice(_SIZES) for _ in range(rng.randint(0, 6))))
        self.cuts = sorted(rng.sample(range(len(self.data) + 1), k=min(3, len(self.data) + 1)))
        self.sent = 0
        self.got = bytearray()
        self.eof = False
        self.shut = False
        self.reset_at = (rng.randint(0, len(self.data)) if rng.random() < 0.15 else None)
        self.reset = False
        self.broken = False
        self.stall_until = 0.0
        self.stall_chance = rng.choice((0.0, 0.0, 0.02, 0.2))
        self.last_action = time.monotonic()

    def act(self, rng: random.Random, now: float) -> None:
        if self.reset or self.shut:
            return
        if self.reset_at is not None and self.sent >= self.reset_at:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
            self.reset = True
            self.last_action = now
            return
        if self.sent < len(self.data):
            cut = next((c for c in self.cuts if c > self.sent), len(self.data))
            if self.reset_at is not None and self.sent < self.reset_at < cut:
                cut = self.reset_at
            try:
                self.sent += self.sock.send(self.data[self.sent:cut])
                self.last_action = now
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                self.shut = self.broken = True  # the other side reset: the tunnel is gone
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.broken = True
        self.shut = True
        self.last_action = now

    def read(self, rng: random.Random, now: float) -> None:
        if self.reset or self.eof or now < self.stall_until:
            return
        if rng.random() < self.stall_chance:
            self.stall_until = now + rng.uniform(0.01, 0.2)
            return
        while True:
            try:
                data = self.sock.recv(1 << 17)
            except BlockingIOError:
                return
            except ConnectionResetError:
                self.eof = True  # the other side's reset came through
                return
            self.last_action = now  # progress: stuck means none for _DEADLINE
            if not data:
                self.eof = True
                return
            self.got += data

    @property
    def done(self) -> bool:
        return self.reset or (self.shut and self.eof)


class Case:
    def __init__(self, pump: _Pump, listener: socket.socket, rng: random.Random, index: int,
                 high: list[int]) -> None:
        self.index = index
        self.pump = pump
        client, a = _tcp_pair(listener)
        b, upstream = _tcp_pair(listener)
        if rng.random() < 0.5:  # small buffers: the relay's writes fall short
            for sock in (a, b):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rng.choice((4096, 16384)))
            for sock in (client, upstream):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rng.choice((4096, 16384)))
        if high and rng.random() < 0.3:  # high descriptor numbers: the table grows
            a, b = _moved(a, high), _moved(b, high)
        for sock in (a, b):
            sock.setblocking(False)
        self.a, self.b = a, b
        self.client = Side(client, rng, "client")
        self.upstream = Side(upstream, rng, "upstream")
        self.ended = threading.Event()
        self.finished: float | None = None
        # bytes read before the relay (a CONNECT's trailing data), and a first answer that
        # fell short (the fresh path's 200: ``to_a``)
        self.trailing = rng.randbytes(rng.choice((1, 300))) if rng.random() < 0.15 else b""
        self.first = rng.randbytes(rng.choice((1, 39))) if rng.random() < 0.15 else b""
        self.cancel_at = (time.monotonic() + rng.uniform(0, 0.5) if rng.random() < 0.1
                          else None)
        # a short idle timeout: the sweep ends it (relay.c's relays count as activity)
        idle = rng.uniform(0.05, 0.5) if rng.random() < 0.05 else 60.0
        self.cut_short = self.cancel_at is not None or idle < 60.0
        self.tunnel = Tunnel(a, b, idle, lambda _: self.ended.set(), to_b=self.trailing,
                             to_a=self.first)
        if self.first or rng.random() < 0.5:
            # the thread's own add (the fresh path's: relay.c's add, or the rest of its 200)
            pump.call_soon(lambda: pump.add(self.tunnel))
        else:
            pump.add(self.tunnel)  # handed over: routed at the thread's next turn

    def state(self) -> str:
        t, c, u = self.tunnel, self.client, self.upstream
        pump = self.pump
        info = Path(f"/proc/self/fdinfo/{pump._epoll_fd}").read_text()
        watched = [fd for fd in (t.a, t.b) if f"tfd: {fd:8d}" in info]
        seen = ([pump._lib.nono_relay_last(pump._relay, fd) >= 0 for fd in (t.a, t.b)]
                if pump._lib is not None else None)
        return (f"in the epoll {watched}, routed in relay.c {seen}, moved {t.up.moved}/"
                f"{t.down.moved}, cancelled {t.cancelled} error {t.error!r}, "
                f"routed {t.routed}, masks {t.masks}, up waits {t.up.waits} held "
                f"{len(t.up.held)} piped {t.up.piped}, down waits {t.down.waits} held "
                f"{len(t.down.held)} piped {t.down.piped}; client sent {c.sent}/{len(c.data)} "
                f"got {len(c.got)} eof {c.eof} reset {c.reset} broken {c.broken}; upstream "
                f"sent {u.sent}/{len(u.data)} got {len(u.got)} eof {u.eof} reset {u.reset} "
                f"broken {u.broken}")

    def sides(self) -> tuple[Side, Side]:
        return self.client, self.upstream

    def check(self) -> list[str]:
        wrong = []
        t, c, u = self.tunnel, self.client, self.upstream
        for src, dst, moved, before in ((c, u, t.up.moved, self.trailing),
                                        (u, c, t.down.moved, self.first)):
            sent = before + bytes(src.data[:src.sent])
            if src.reset or dst.reset or self.cut_short:
                if not sent.startswith(bytes(dst.got)):
                    wrong.append(f"{src.name} -> {dst.name}: not a prefix of what was sent")
                continue
            moved += len(before)  # (counted by the tunnel's owner, not the pump)
            if bytes(dst.got) != sent:
                wrong.append(f"{src.name} -> {dst.name}: {len(dst.got)} bytes arrived of "
                             f"{len(sent)} sent, or not in order")
            if not dst.eof:
                wrong.append(f"{src.name} -> {dst.name}: no end of file")
            if moved != len(sent):
                wrong.append(f"{src.name} -> {dst.name}: counted {moved}, sent {len(sent)}")
        if t.error is not None:
            wrong.append(f"tunnel error {t.error!r}")
        return [f"tunnel {self.index}: {w}" for w in wrong]

    def close(self) -> None:
        for sock in (self.a, self.b, self.client.sock, self.upstream.sock):
            sock.close()


def _moved(sock: socket.socket, high: list[int]) -> socket.socket:
    """``sock`` at a free high descriptor number."""
    target = high.pop()
    os.dup2(sock.fileno(), target)
    sock.close()
    return socket.socket(fileno=target)


def main() -> int:
    library, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    native = library != "python"
    if native:
        _load(library)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    top = min(hard, 8192) - 1
    high = list(range(top - 512, top))
    rng = random.Random(seed)
    pump = _Pump(native=native)
    assert (pump._relay is not None) == native
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    live: list[Case] = []
    made = 0
    wrong: list[str] = []
    while made < count or live:
        while made < count and len(live) < 48:
            live.append(Case(pump, listener, rng, made, high))
            made += 1
        now = time.monotonic()
        for case in list(live):
            for side in case.sides():
                side.read(rng, now)
                if rng.random() < 0.7:
                    side.act(rng, now)
            if case.cancel_at is not None and case.cancel_at <= now:
                pump.cancel(case.tunnel)
                case.cancel_at = now + 1e9  # once (still a cancelled case)
            reset = any(side.reset for side in case.sides())
            if case.cut_short and case.ended.is_set():
                case.finished = case.finished or now
            if case.finished is None and (
                    all(side.done for side in case.sides())
                    or (reset and all(side.shut or side.reset for side in case.sides()))):
                case.finished = now
            if case.finished is not None:
                if not case.ended.is_set():
                    if now - case.finished < _DEADLINE:
                        continue
                    wrong.append(f"tunnel {case.index}: never ended after both sides did "
                                 f"({case.state()})")
                    pump.call_soon(lambda t=case.tunnel: pump.end(t))
                    case.ended.wait(30)  # (closed before its end: a stale route)
                wrong += case.check()
                live.remove(case)
                free = [s.fileno() for s in (case.a, case.b) if s.fileno() >= top - 512]
                case.close()
                high.extend(free)  # reused at once by a later tunnel
            elif max(s.last_action for s in case.sides()) < now - _DEADLINE:
                wrong.append(f"tunnel {case.index}: stuck ({case.state()})")
                live.remove(case)
                pump.call_soon(lambda t=case.tunnel: pump.end(t))
                case.ended.wait(30)  # (closed before its end: a stale route)
                case.close()
        time.sleep(0.001)
        if len(wrong) > 20:
            break
    listener.close()
    if wrong:
        print("\n".join(wrong))
        return 1
    print(f"ok {made}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
