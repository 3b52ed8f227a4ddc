"""Python lines and calls per fresh proxied request in the proxy's pump thread: a count that
the machine's load does not move, for A/Bs of the fresh CONNECT's path (``nonod/proxy/
_fresh.py``, ``_pump.py``) whose wall-clock effect is below the noise of bench/proxy.py.

For each tree (this checkout, and each ``--before DIR``, e.g. ``git archive main nonod | tar
-x -C DIR``) a child process serves the proxy in-process (as bench/proxy.py's ``nonod`` role
does, with an upstream echo process of its own) and makes ``--requests`` fresh requests
through it (connect, CONNECT, 64 bytes each way, close) after a warm-up; during them a line
tracer runs in the pump thread only (set there from the thread itself, on the frames already
running too). Printed per tree: lines and calls per request, the lines from the accept's call
(``_Acceptor._accept``) to the line that sends the client's ``200`` (the pump's turn before the
call not counted: the same in every tree), and the functions with the most lines. The
tracer slows the thread down, so the pump takes more turns than it would: compare trees, not
against the untraced figures.

    .venv/bin/python bench/proxy_lines.py [--requests N] [--top N] [--before DIR ...] [--json]
"""

from __future__ import annotations

import argparse
import base64
import collections
import functools
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
MESSAGE = b"m" * 64


def _request(port: int, head: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(head)
        got = b""
        while b"\r\n\r\n" not in got:
            data = sock.recv(4096)
            if not data:
                raise RuntimeError("the proxy closed the connection")
            got += data
        if not got.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the proxy answered {got.splitlines()[0]!r}")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(MESSAGE)
        echoed = 0
        while echoed < len(MESSAGE):
            data = sock.recv(4096)
            if not data:
                raise RuntimeError("the echo closed early")
            echoed += len(data)
    finally:
        sock.close()


def _measure(requests: int, top: int) -> dict[str, Any]:
    """In the child: serve the proxy, trace its pump thread over ``requests`` requests."""
    import inspect

    import trio

    from nonod.proxy import ProxyLimits, ProxyPolicy, Resolver, serve_proxy
    from nonod.proxy._fresh import _Acceptor, _Fresh
    from nonod.proxy._pump import the_pump

    upstream = subprocess.Popen([sys.executable, str(BENCH / "proxy.py"), "--role", "upstream",
                                 "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert upstream.stdout is not None
    echo = json.loads(upstream.stdout.readline())["echo"]
    lines: collections.Counter[tuple[str, str]] = collections.Counter()
    calls: collections.Counter[tuple[str, str]] = collections.Counter()
    # Lines before the client's 200: from the accept's call (``_Acceptor._accept``) to the
    # line of ``_Fresh._established`` that sends it (the pump's turn before the accept's
    # call, the same in every tree, not counted).
    answering = [False]
    answered = collections.Counter[tuple[str, str]]()
    accept_code = _Acceptor._accept.__code__
    established = _Fresh._established
    source, first = inspect.getsourcelines(established)
    send_line = first + next(i for i, line in enumerate(source)
                             if "self.client.send(ESTABLISHED)" in line)
    established_code = established.__code__

    def where(frame: FrameType) -> tuple[str, str]:
        return os.path.basename(frame.f_code.co_filename), frame.f_code.co_name

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        if event == "call":
            calls[where(frame)] += 1
            if frame.f_code is accept_code:
                answering[0] = True
        elif event == "line":
            lines[where(frame)] += 1
            if answering[0]:
                answered[where(frame)] += 1
                if frame.f_code is established_code and frame.f_lineno == send_line:
                    answering[0] = False
        return tracer

    def in_pump(call: Any) -> None:
        done = threading.Event()

        def run() -> None:
            call()
            done.set()

        the_pump().call_soon(run)
        done.wait()

    def trace_on() -> None:
        sys.settrace(tracer)
        frame = sys._getframe().f_back
        while frame is not None:  # the thread's loop is running already
            frame.f_trace = tracer
            frame = frame.f_back

    def trace_off() -> None:
        sys.settrace(None)
        frame = sys._getframe().f_back
        while frame is not None:
            frame.f_trace = None
            frame = frame.f_back

    def client(port: int, token: str) -> None:
        auth = base64.b64encode(f"nono:{token}".encode()).decode()
        head = (f"CONNECT echo.example:443 HTTP/1.1\r\nHost: echo.example:443\r\n"
                f"Proxy-Authorization: Basic {auth}\r\n\r\n").encode()
        for _ in range(200):
            _request(port, head)
        in_pump(trace_on)
        time.sleep(0.2)  # the warm-up's ends, traced, then forgotten
        lines.clear()
        calls.clear()
        answered.clear()
        for _ in range(requests):
            _request(port, head)
        time.sleep(0.2)  # the last requests' ends
        in_pump(trace_off)

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
        token = secrets.token_hex(32)
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(
                serve_proxy, listeners[0], policy=ProxyPolicy(hosts=frozenset({"echo.example"})),
                resolver=Resolver(pins={"echo.example": f"127.0.0.1:{echo}"}),
                events=lambda event: None, limits=ProxyLimits(max_connections=4096),
                proxy_token=token, zero_copy=True))
            port = listeners[0].socket.getsockname()[1]
            await trio.to_thread.run_sync(client, port, token)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        if upstream.stdin is not None:
            upstream.stdin.close()
        upstream.terminate()
        upstream.wait(timeout=10)
    import nonod

    return {"tree": str(Path(nonod.__file__).resolve().parent.parent),
            "lines": sum(lines.values()) / requests, "calls": sum(calls.values()) / requests,
            "before_200": sum(answered.values()) / requests,
            "top": [{"file": f, "function": fn, "lines": n / requests,
                     "calls": calls[(f, fn)] / requests}
                    for (f, fn), n in lines.most_common(top)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--top", type=int, default=12, help="functions listed per tree")
    parser.add_argument("--before", metavar="DIR", action="append", default=[],
                        help="also count the nonod of the tree in DIR (repeatable)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.requests, args.top)))
        return
    results = []
    for tree in [str(BENCH.parent), *(os.path.abspath(d) for d in args.before)]:
        out = subprocess.run([sys.executable, __file__, "--child", "--requests",
                              str(args.requests), "--top", str(args.top)],
                             env={**os.environ, "PYTHONPATH": tree}, stdout=subprocess.PIPE,
                             text=True, check=True)
        result = json.loads(out.stdout)
        if result["tree"] != tree:
            raise SystemExit(f"nonod came from {result['tree']}, not {tree}")
        results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(f"{result['tree']}: {result['lines']:.1f} lines, {result['calls']:.1f} calls "
              f"per request ({args.requests} requests); {result['before_200']:.1f} lines from "
              f"the accept's call to the 200's send")
        for row in result["top"]:
            print(f"  {row['lines']:7.2f} lines {row['calls']:5.2f} calls  "
                  f"{row['file']}:{row['function']}")


if __name__ == "__main__":
    main()
