#!/usr/bin/python3 -IS
"""nonod's tool shim: what the agent's session runs in place of a tool (docs/tool-sandboxes.md).

It holds nothing: it asks the daemon, over the session's own tool socket, to run the tool in a
child session with the tool's policy, hands over its stdin/stdout/stderr (SCM_RIGHTS), forwards
the signals it gets, and exits as the tool did. The daemon knows the calling session by the
socket the request came in on, never by anything said here. Standard library only: it runs
with the interpreter the view has, isolated (-I) and without site (-S).
"""

import array
import json
import os
import select
import signal
import socket
import struct
import sys

TOOL = "__TOOL__"
SOCKET = "/.nono-tool.sock"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH)


def _say(text: str) -> None:
    os.write(2, ("nono: " + text + "\n").encode("utf-8", "replace"))


def _die_like(sig: int) -> int:
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    return 128 + sig


def main() -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(SOCKET)
    except OSError as exc:
        _say(f"tool-sandbox unavailable for {TOOL}: {exc.strerror}")
        return 126
    body = json.dumps({"tool": TOOL, "argv": sys.argv[1:], "cwd": os.getcwd(),
                       "env": dict(os.environ)}).encode()
    conn.sendmsg([struct.pack(">I", len(body))],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    conn.sendall(body)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for sig in FORWARDED:
        signal.signal(sig, lambda *_: None)
    buffered = b""
    poller = select.poll()  # (select refuses descriptors past 1024, which the agent may hold)
    for fd in (conn.fileno(), wake_r):
        poller.register(fd, select.POLLIN)
    while True:
        try:
            ready = [fd for fd, _ in poller.poll()]
        except InterruptedError:
            continue
        if wake_r in ready:
            for number in os.read(wake_r, 64):
                conn.sendall(json.dumps({"signal": number}).encode() + b"\n")
        if conn.fileno() in ready:
            data = conn.recv(65536)
            if not data:
                _say(f"tool-sandbox: the daemon went away while {TOOL} ran")
                return 125
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                reply = json.loads(line)
                if "refused" in reply:
                    _say(reply["refused"])
                    return 126
                if reply.get("signal"):
                    return _die_like(int(reply["signal"]))
                if "exit" in reply:
                    return int(reply["exit"])


if __name__ == "__main__":
    sys.exit(main())
