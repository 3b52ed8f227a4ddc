"""TLS to a route's upstream: OpenSSL over memory BIOs, fed by large socket reads.

OpenSSL reading the socket itself (an ``ssl.SSLSocket``) asks the kernel for one TLS record
at a time, in two reads (the 5-byte record header, then the record): a 100 MB download took
about 12,000 ``read`` calls, each a wake-up of the reading side of the loopback or network
stack. Here the socket is a plain non-blocking socket: one ``recv_into`` takes everything that
has arrived (up to :data:`_RAW_READ` bytes, typically dozens of records) into the thread's
scratch buffer, that ciphertext is copied into the connection's incoming BIO, and OpenSSL
decrypts record after record from memory. Writes go the other way: OpenSSL encrypts into the
outgoing BIO, and one task at a time sends its bytes, in order (what reading makes OpenSSL
answer, such as a TLS 1.3 key update, is sent by the reader unless a send is under way, which
then sends it too).

(``trio.SSLStream`` also uses memory BIOs, but reads the socket in small pieces and runs a
Python retry loop per record; it held a streamed response to about a fifth of what the same
client reaches directly.)

Certificate and host name checks are the context's (``check_hostname`` and
``CERT_REQUIRED``, set by the caller), done during :meth:`TlsStream.connect`. Like trio's
``https_compatible`` mode, closing does not wait for the peer's close_notify and an upstream
that ends without one ends the stream cleanly (HTTP frames its own bodies).

Isolation: the scratch buffer is per thread and only ever holds ciphertext between a
``recv_into`` and the copy into one connection's BIO, with no ``await`` between the two; the
BIOs, and so every byte of plaintext, are the connection's own.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Final, cast, final

import trio

_RECEIVE_SIZE: Final = 1 << 18
#: The most ciphertext one socket read takes outside a large body (into the thread's scratch
#: buffer, then into the incoming BIO whole). OpenSSL's memory BIO keeps the allocation of its
#: largest write while the connection lives, so this bounds what a kept-alive upstream
#: connection holds.
_RAW_READ: Final = 1 << 18
#: During a large body (:meth:`TlsStream.bulk_reads`), what the BIO takes at a time from a
#: socket read of up to 1 MiB (large reads free the upstream's window by more at once: the
#: upstream spends less CPU sending).
_FEED: Final = 1 << 16
#: The most plaintext encrypted into the outgoing BIO before it is sent.
_WRITE_STEP: Final = 1 << 18


class _Scratch(threading.local):
    def __init__(self) -> None:
        self.buffer = bytearray(_RAW_READ)
        self.view = memoryview(self.buffer)


_scratch = _Scratch()


@final
class TlsStream(trio.abc.Stream):
    """A trio stream over a connected, non-blocking socket and an ``ssl.SSLObject`` whose
    handshake is done."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self.socket = sock
        self._tls = tls
        self._incoming = incoming
        self._outgoing = outgoing
        self._sending = False  # a task is sending the outgoing BIO's bytes
        self._unsent = memoryview(b"")  # taken from the outgoing BIO, not yet sent
        self._bulk: memoryview | None = None  # a large body's own read buffer (bulk_reads)
        self._ahead = memoryview(b"")  # read into it, not yet in the incoming BIO

    @classmethod
    async def connect(cls, tcp: trio.SocketStream, context: ssl.SSLContext,
                      server_hostname: str) -> TlsStream:
        """Take over ``tcp``'s socket and complete the handshake; a failed handshake or
        verification raises ``trio.BrokenResourceError`` (the socket is closed)."""
        raw = socket.socket(fileno=tcp.socket.detach())
        raw.setblocking(False)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        try:
            tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        stream = cls(raw, tls, incoming, outgoing)
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await stream._flush()
                    if not await stream._fill():
                        raise ssl.SSLEOFError("the upstream closed during the handshake"
                                              ) from None
            await stream._flush()
        except (ssl.SSLError, OSError, trio.BrokenResourceError) as exc:
            with contextlib.suppress(ssl.SSLError, OSError, trio.BrokenResourceError):
                stream.send_ready()  # our alert, if OpenSSL wrote one and it fits at once
            raw.close()
            raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
        except BaseException:
            raw.close()
            raise
        await trio.lowlevel.checkpoint()
        return stream

    def buffered(self) -> bool:
        """Whether bytes from the upstream wait in this stream (decrypted or not), which a
        poll of the socket would not show."""
        return bool(self._ahead or self._incoming.pending or self._tls.pending())

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        want = max_bytes if max_bytes is not None else _RECEIVE_SIZE
        if want < 1:
            raise ValueError("max_bytes must be >= 1")
        chunks: list[bytes] = []

        def read(_have: int, room: int) -> int:
            chunks.append(self._tls.read(room))
            return len(chunks[-1])

        await self._records(want, read)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def receive_into(self, buffer: memoryview) -> int:
        """Like :meth:`receive_some`, but into ``buffer`` (no allocation, no join): every
        record that has arrived, up to ``len(buffer)`` bytes; 0 at the end of the stream."""
        if not buffer:
            raise ValueError("the buffer must not be empty")
        return await self._records(len(buffer), self._reader_into(buffer))

    def read_ready(self, buffer: memoryview) -> int | None:
        """For a worker thread (nothing else may use the stream meanwhile): decrypt into
        ``buffer`` every record that has arrived, up to its size, without waiting; None when
        nothing has (wait for the socket to be readable, then call again), 0 at the end of
        the stream. What reading made OpenSSL answer waits for :meth:`send_ready`."""
        return self._decrypt(len(buffer), self._reader_into(buffer))

    def _reader_into(self, buffer: memoryview) -> Callable[[int, int], int]:
        def read(have: int, room: int) -> int:
            return cast(int, self._tls.read(room, buffer[have:]))  # a count, given a buffer

        return read

    async def _records(self, limit: int, read: Callable[[int, int], int]) -> int:
        """:meth:`_decrypt`, waiting for the first record when none has arrived."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while (have := self._decrypt(limit, read)) is None:
            await self._wait_readable()
            waited = True
        if (self._unsent or self._outgoing.pending) and not self._sending:
            await self._flush()  # what reading made OpenSSL answer (a key update)
            waited = True
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return have

    def _decrypt(self, limit: int, read: Callable[[int, int], int]) -> int | None:
        """Decrypt records with ``read(bytes so far, room left)`` until ``limit`` bytes, the
        end of the stream, or nothing more has arrived: how many bytes, or None when nothing
        had arrived at all. A failure with bytes in hand ends the call early (it comes back
        on the next)."""
        have = 0
        while have < limit:
            try:
                n = read(have, limit - have)
            except ssl.SSLWantReadError:
                try:
                    filled = self._fill_now()
                except OSError as exc:
                    if have:
                        break
                    raise trio.BrokenResourceError(str(exc)) from exc
                if filled is None:  # nothing more has arrived
                    if have:
                        break
                    return None
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break  # the peer closed, with or without close_notify: end of stream
            except ssl.SSLError as exc:
                if have:
                    break
                raise trio.BrokenResourceError(str(exc)) from exc
            if not n:
                break
            have += n
        return have

    @contextlib.contextmanager
    def bulk_reads(self, size: int) -> Iterator[None]:
        """While one worker relays a large body: socket reads of up to ``size`` bytes, into a
        buffer of the body's own, fed to OpenSSL :data:`_FEED` bytes at a time (the BIO
        keeps the allocation of its largest write for the connection's life, so it must
        not take a whole large read). Ciphertext read ahead of the body's end goes into
        the BIO when this ends."""
        self._bulk = memoryview(bytearray(size))
        try:
            yield
        finally:
            if self._ahead:
                self._incoming.write(self._ahead)
            self._ahead = memoryview(b"")
            self._bulk = None

    def _fill_now(self) -> int | None:
        """Move ciphertext into the incoming BIO: a slice of what a bulk read took ahead,
        else what has arrived on the socket. How many bytes (0 at the end of the stream,
        which the BIO is then told), or None when nothing has arrived."""
        if not self._ahead:
            view = _scratch.view if self._bulk is None else self._bulk
            try:
                n = self.socket.recv_into(view)
            except BlockingIOError:
                return None
            if not n:
                self._incoming.write_eof()
                return 0
            if self._bulk is None:
                self._incoming.write(view[:n])
                return n
            self._ahead = view[:n]
        piece, self._ahead = self._ahead[:_FEED], self._ahead[_FEED:]
        self._incoming.write(piece)
        return len(piece)

    async def _fill(self) -> int:
        """:meth:`_fill_now`, waiting for the socket when nothing has arrived yet."""
        while True:
            filled = self._fill_now()
            if filled is not None:
                return filled
            await self._wait_readable()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data).cast("B")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        waited = False
        try:
            while view:
                try:
                    self._tls.write(view[:_WRITE_STEP])
                except ssl.SSLError as exc:
                    raise trio.BrokenResourceError(str(exc)) from exc
                view = view[_WRITE_STEP:]
                waited = await self._send_out() or waited
        finally:
            self._sending = False
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _flush(self) -> None:
        """Send what OpenSSL wrote into the outgoing BIO (another task sending sends it)."""
        if self._sending:
            return
        self._sending = True
        try:
            await self._send_out()
        finally:
            self._sending = False

    async def _send_out(self) -> bool:
        """Send everything in the outgoing BIO, in order, by the one task sending; whether
        it had to wait."""
        waited = False
        while not self.send_ready():
            await self._wait_writable()
            waited = True
        return waited

    def send_ready(self) -> bool:
        """Send what OpenSSL has written (and not yet sent) without waiting: True once all
        of it is sent (else wait for the socket to be writable and call again). Only the
        one task (or worker thread) sending calls this."""
        while True:
            if not self._unsent:
                if not self._outgoing.pending:
                    return True
                self._unsent = memoryview(self._outgoing.read())
            try:
                sent = self.socket.send(self._unsent)
            except BlockingIOError:
                return False
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            self._unsent = self._unsent[sent:]

    async def wait_send_all_might_not_block(self) -> None:
        await self._wait_writable()

    async def aclose(self) -> None:
        if self.socket.fileno() >= 0:
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()

    async def _wait_readable(self) -> None:
        if self.socket.fileno() < 0:
            raise trio.ClosedResourceError("the upstream connection is closed")
        await trio.lowlevel.wait_readable(self.socket)

    async def _wait_writable(self) -> None:
        if self.socket.fileno() < 0:
            raise trio.ClosedResourceError("the upstream connection is closed")
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
