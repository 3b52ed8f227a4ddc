"""The shim's calls on a session's tool socket: what comes in, what goes back.

A call is one frame: a 4-byte big-endian length sent with the caller's stdin, stdout and
stderr attached (``SCM_RIGHTS``), then that many bytes of JSON (``tool``, ``argv`` after the
command name, ``cwd``, ``env``). While the tool runs the shim may send ``{"signal": N}`` lines
(signals it got, to forward). The daemon answers with one line: ``{"refused": message}``, or
``{"exit": code, "signal": N or null}`` once the tool's session ended.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import msgspec
import trio

#: The largest call the shim may send (argv and environment), and the longest signal line.
MAX_CALL_BYTES: Final = 1 << 20
MAX_LINE_BYTES: Final = 4096
_FD_SIZE: Final = array.array("i").itemsize


class CallError(Exception):
    """A malformed call: the connection is dropped."""


class Frame(msgspec.Struct, frozen=True):
    tool: str
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]


@dataclass(frozen=True)
class Call:
    frame: Frame
    #: The caller's stdin, stdout and stderr (the daemon's copies; the receiver closes them).
    fds: tuple[int, int, int]

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


async def receive_call(stream: trio.SocketStream) -> Call:
    """The call on ``stream``; CallError (its descriptors closed) when it is not one."""
    head, ancillary, _, _ = await stream.socket.recvmsg(
        4, socket.CMSG_SPACE(3 * _FD_SIZE), socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % _FD_SIZE])
    got = tuple(fds)
    try:
        if len(head) != 4 or len(got) != 3:
            raise CallError("a call starts with a 4-byte length carrying three descriptors")
        (size,) = struct.unpack(">I", head)
        if size > MAX_CALL_BYTES:
            raise CallError(f"a call of {size} bytes is over {MAX_CALL_BYTES}")
        body = bytearray()
        while len(body) < size:
            chunk = await stream.receive_some(size - len(body))
            if not chunk:
                raise CallError("the caller hung up mid-call")
            body += chunk
        try:
            frame = msgspec.json.decode(body, type=Frame)
        except msgspec.DecodeError as exc:
            raise CallError(f"malformed call: {exc}") from None
    except BaseException:
        for fd in got:
            os.close(fd)
        raise
    return Call(frame=frame, fds=(got[0], got[1], got[2]))


def peer_pid(stream: trio.SocketStream) -> int:
    """The pid of the caller (the shim), as the daemon sees it (``SO_PEERCRED``)."""
    creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                     struct.calcsize("3i"))
    pid, _, _ = struct.unpack("3i", creds)
    return int(pid)


async def signals(stream: trio.SocketStream) -> AsyncIterator[int]:
    """The signal numbers the shim reports, until it hangs up or sends something else."""
    buffered = b""
    while True:
        data = await stream.receive_some(MAX_LINE_BYTES)
        if not data:
            return
        buffered += data
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            try:
                yield int(json.loads(line)["signal"])
            except (ValueError, KeyError, TypeError):
                return
        if len(buffered) > MAX_LINE_BYTES:
            return


async def reply(stream: trio.SocketStream, answer: dict[str, object]) -> None:
    """One answer line; a caller that went away is no error."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(json.dumps(answer).encode() + b"\n")
