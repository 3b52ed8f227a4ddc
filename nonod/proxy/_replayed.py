"""A stream with bytes already read from it put back in front (for the WebSocket relay, which
hands a connection h11 has read from to another parser, and for TLS interception, which
starts TLS on a connection whose ClientHello may have come with the CONNECT head)."""

from __future__ import annotations

from typing import final

import trio


@final
class Replayed(trio.abc.Stream):
    """``stream``, with ``prefix`` read before anything else."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


__all__ = ["Replayed"]
