"""TLS to a route's upstream, with OpenSSL on the socket itself.

``trio.SSLStream`` runs OpenSSL over memory BIOs: every TLS record is copied between the socket
and the BIOs and goes through a Python retry loop, which held a streamed response to about a
fifth of what the same client reaches directly. Here the socket is a non-blocking
``ssl.SSLSocket``: OpenSSL reads and writes the kernel socket, trio only waits for readiness,
and one ``receive_some`` drains every record that has arrived (up to its size) instead of one.

Certificate and host name checks are the context's (``check_hostname`` and
``CERT_REQUIRED``, set by the caller), done during :meth:`TlsStream.connect`. Like trio's
``https_compatible`` mode, closing does not wait for the peer's close_notify and an upstream
that ends without one ends the stream cleanly (HTTP frames its own bodies).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Final, final

import trio

_RECEIVE_SIZE: Final = 1 << 18


@final
class TlsStream(trio.abc.Stream):
    """A trio stream over a connected, handshaken, non-blocking ``ssl.SSLSocket``."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self.socket = tls

    @classmethod
    async def connect(cls, tcp: trio.SocketStream, context: ssl.SSLContext,
                      server_hostname: str) -> TlsStream:
        """Take over ``tcp``'s socket and complete the handshake; a failed handshake or
        verification raises ``trio.BrokenResourceError`` (the socket is closed)."""
        raw = socket.socket(fileno=tcp.socket.detach())
        raw.setblocking(False)
        try:
            tls = context.wrap_socket(raw, server_hostname=server_hostname,
                                      do_handshake_on_connect=False)
        except BaseException:
            raw.close()
            raise
        stream = cls(tls)
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await trio.lowlevel.wait_readable(tls)
                except ssl.SSLWantWriteError:
                    await trio.lowlevel.wait_writable(tls)
        except (ssl.SSLError, OSError) as exc:
            tls.close()
            raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
        except BaseException:
            tls.close()
            raise
        await trio.lowlevel.checkpoint()
        return stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        want = max_bytes if max_bytes is not None else _RECEIVE_SIZE
        if want < 1:
            raise ValueError("max_bytes must be >= 1")
        chunks: list[bytes] = []

        def read(_have: int, room: int) -> int:
            chunks.append(self.socket.recv(room))
            return len(chunks[-1])

        await self._records(want, read)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def receive_into(self, buffer: memoryview) -> int:
        """Like :meth:`receive_some`, but into ``buffer`` (no allocation, no join): every
        record that has arrived, up to ``len(buffer)`` bytes; 0 at the end of the stream."""
        if not buffer:
            raise ValueError("the buffer must not be empty")
        return await self._records(len(buffer),
                                   lambda have, room: self.socket.recv_into(buffer[have:]))

    async def _records(self, limit: int, read: Callable[[int, int], int]) -> int:
        """Read records with ``read(bytes so far, room left)`` until ``limit`` bytes, the
        end of the stream, or nothing more has arrived (it waits only for the first)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        have = 0
        waited = False
        while have < limit:
            try:
                n = read(have, limit - have)
            except ssl.SSLWantReadError:
                if have:
                    break
                await self._wait(readable=True)
                waited = True
                continue
            except ssl.SSLWantWriteError:
                if have:
                    break
                await self._wait(readable=False)
                waited = True
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break  # the peer closed, with or without close_notify: end of stream
            except (ssl.SSLError, OSError) as exc:
                if have:
                    break  # hand over what arrived; the error comes back on the next call
                raise trio.BrokenResourceError(str(exc)) from exc
            if not n:
                break
            have += n
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return have

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        waited = False
        while view:
            try:
                sent = self.socket.send(view)
            except ssl.SSLWantWriteError:
                await self._wait(readable=False)
                waited = True
                continue
            except ssl.SSLWantReadError:
                await self._wait(readable=True)
                waited = True
                continue
            except (ssl.SSLError, OSError) as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            view = view[sent:]
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._wait(readable=False)

    async def aclose(self) -> None:
        if self.socket.fileno() >= 0:
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()

    async def _wait(self, *, readable: bool) -> None:
        if self.socket.fileno() < 0:
            raise trio.ClosedResourceError("the upstream connection is closed")
        if readable:
            await trio.lowlevel.wait_readable(self.socket)
        else:
            await trio.lowlevel.wait_writable(self.socket)


async def receive_into(stream: TlsStream | trio.SocketStream, buffer: memoryview) -> int:
    """Read what has arrived on an upstream connection into ``buffer``; 0 at its end.
    Errors are trio's (``BrokenResourceError``, ``ClosedResourceError``), as from
    ``receive_some``."""
    if isinstance(stream, TlsStream):
        return await stream.receive_into(buffer)
    try:
        return await stream.socket.recv_into(buffer)
    except OSError as exc:
        if stream.socket.fileno() < 0:
            raise trio.ClosedResourceError("the upstream connection is closed") from exc
        raise trio.BrokenResourceError(str(exc)) from exc


__all__ = ["TlsStream", "receive_into"]
