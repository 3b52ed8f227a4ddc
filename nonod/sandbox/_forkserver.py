"""The fork server: a single-threaded process that forks launchers on request.

The daemon is a threaded trio process, which must not fork. It starts this server once, with a
clean environment, and sends it one ``LaunchPlan`` per SEQPACKET message together with five
descriptors (stdin, stdout, stderr, launch pipe, exit pipe). The server forks, the child runs
``_launcher.run_outer`` and the server goes back to reading. All results travel on the pipes,
straight to the daemon; the server answers nothing.

It dies with the daemon (PR_SET_PDEATHSIG), and its children die with it, so a killed daemon
leaves no sandboxed process behind.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys

import msgspec

from . import _libc
from ._launcher import REC_ERROR, STEPS, LaunchPlan, record, run_outer

MAX_PLAN = 1 << 20
FDS_PER_PLAN = 5


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(sock: socket.socket) -> None:
    decoder = msgspec.msgpack.Decoder(LaunchPlan)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_PLAN, FDS_PER_PLAN)
        except InterruptedError:
            continue
        _reap()
        if not msg:
            return  # the daemon closed its end
        if len(fds) != FDS_PER_PLAN:
            for fd in fds:
                os.close(fd)
            continue
        try:
            plan = decoder.decode(msg)
        except msgspec.DecodeError as exc:
            os.write(fds[3], record(REC_ERROR, STEPS.index("fork"), errno.EINVAL,
                                    str(exc).encode()[:500]))
            for fd in fds:
                os.close(fd)
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            os.write(fds[3], record(REC_ERROR, STEPS.index("fork"), exc.errno or 0, b"fork"))
            pid = -1
        if pid == 0:
            sock.close()
            try:
                run_outer(plan, (fds[0], fds[1], fds[2], fds[3], fds[4]))
            finally:
                os._exit(126)
        for fd in fds:
            os.close(fd)


def main() -> None:
    fd, parent = int(sys.argv[-2]), int(sys.argv[-1])
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(1)  # the daemon died before we could tie our life to it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the daemon's business
    sock = socket.socket(fileno=fd)
    serve(sock)


if __name__ == "__main__":
    main()
