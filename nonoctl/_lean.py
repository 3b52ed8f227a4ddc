"""``nonoctl launch`` (and ``run``) on the caller's terminal, with the standard library only.

An attached launch is the CLI's most frequent command, and the full client's imports (msgspec
with ``typing``, ``re``, ``datetime``, ``uuid`` and ``decimal``; the protocol's ~80 message
types; ``socket`` with its enums) cost it more than the interpreter's own start-up. This
module speaks the same protocol for that one command without them: it reads the command line
with ``_fastargs`` and ``_nono``, runs the ``Launch`` checks of ``nonod._wire`` and the socket
directory checks of ``nonod.control._socketdir`` (the very functions the full client runs),
writes the ``hello`` and the ``Launch`` as JSON by hand, talks through ``_ws`` and reads the
replies with the interpreter's C JSON scanner.

Two rules keep it the same command as the full path:

- It *declines* (``run`` returns None, and ``nonoctl._cli`` does everything again, from the
  start) whenever the command is not plain: another verb, ``--json``, ``--detach``,
  ``--dry-run``, ``--trust-override``, a ``NONO_*`` variable that is refused or noted, a
  variable left out of the environment, a ``Launch`` check that fails, a value JSON cannot
  carry as msgspec would, or a connection that cannot be made, trusted and upgraded. All of
  those happen before anything is sent, so the full path's second attempt starts clean and
  says what it always said (or starts the daemon). One exception: a socket whose listener
  runs as neither us nor root is refused here, with the full client's error
  (``client.untrusted_peer``), so that it is not connected to a second time.
- Once the launch is sent, the replies it reads plainly (``welcome``, ``launched`` with
  nothing to warn about, ``exited``) take a few dictionary look-ups, each reply checked whole
  against the protocol's own type first (``nonod._shapes.fits``: every field, those it does
  not use too, never more leniently than msgspec); any other message (an error, a warning to
  show, a reply that does not fit) goes through the full decoder (``nonod.protocol``,
  imported then), which refuses a malformed one as the full client does, and errors are
  reported by ``nonoctl._cli.report``: the same messages, hints and exit statuses.

``_cli``'s attached launch runs :func:`attend` too, so the conversation is written once.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (the interpreter has loaded it)
import os
import sys

from nonod import _wire
from nonod.control._socketdir import (
    UnsafeSocketPath,
    client_socket_path,
    parent_and_name,
    plain_path,
    trusted_socket_dir,
)

from . import _fastargs, _nono, _ws

TYPE_CHECKING = False  # no ``typing`` at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Final, Protocol

    from ._output import Output

    class Transport(Protocol):
        """What :func:`attend` needs of a socket (``socket.socket`` or ``_socket.socket``)."""

        def fileno(self) -> int: ...
        def recv(self, size: int, /) -> bytes: ...
        def sendall(self, data: bytes, /) -> None: ...
        def sendmsg(self, buffers: Sequence[bytes], ancdata: Sequence[tuple[int, int, bytes]],
                    /) -> int: ...
        def settimeout(self, timeout: float | None, /) -> None: ...



def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object whose keys are each given once: the scanner keeps a key's last value,
    msgspec checks every one (``{"exit_code": "x", "exit_code": 0}`` it refuses), so a key
    given twice is the full decoder's to judge (review28)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("a key given twice")
    return value


class _Context:
    """What the C scanner reads from a ``json.JSONDecoder``: plain JSON, each object's keys
    checked to be given once."""

    strict = True
    object_hook = None
    object_pairs_hook = staticmethod(_unique)
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not JSON")  # NaN, Infinity: msgspec never writes them


try:  # the C module alone: the ``json`` package would import ``re`` (and ``enum``...)
    from _json import encode_basestring as _quote
    from _json import make_scanner
except ImportError:  # pragma: no cover - an interpreter without the C accelerator
    from json import JSONDecoder
    from json.encoder import encode_basestring as _quote

    _scan = JSONDecoder(object_pairs_hook=_unique,  # type: ignore[attr-defined]
                        parse_constant=_Context.parse_constant).scan_once
else:
    _scan = make_scanner(_Context())  # type: ignore[arg-type]

CLIENT_NAME: Final = "nonoctl"
CONNECT_TIMEOUT: Final = 10.0
#: Largest reply the client accepts (the daemon's output chunks are 64 KiB).
MAX_REPLY_BYTES: Final = 64 * 1024 * 1024

# ``_cli``'s exit statuses that this module returns itself
EXIT_FAILURE: Final = 1
EXIT_DAEMON: Final = 122
EXIT_INTERRUPTED: Final = 130

FORWARDED_SIGNALS: Final = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGWINCH", "SIGUSR1",
                            "SIGUSR2")
#: How long a stopping signal that came before the ``launched`` reply waits for it.
LAUNCHED_GRACE: Final = 1.0
#: Signals that end ``nonoctl launch`` itself while there is no session to forward them to.
STOPPING: Final = ("SIGINT", "SIGTERM", "SIGHUP")



# ------------------------------------------------------------------- shared with ``_cli``


def absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def profile_arg(value: str | None) -> str | None:
    if value is None:
        return None
    if "/" in value or value.endswith(".json"):
        return absolute(value)
    return value


def option_values(args: Mapping[str, Any]) -> dict[str, Any]:
    """``LaunchOptions``' fields, in its order, from the launch flags' values."""
    return {
        "allow_cwd": args["allow_cwd"],
        "allow": tuple(absolute(x) for x in args["allow"]),
        "read": tuple(absolute(x) for x in args["read"]),
        "write": tuple(absolute(x) for x in args["write"]),
        "allow_file": tuple(absolute(x) for x in args["allow_file"]),
        "read_file": tuple(absolute(x) for x in args["read_file"]),
        "write_file": tuple(absolute(x) for x in args["write_file"]),
        "workdir": absolute(args["workdir"]) if args["workdir"] else None,
        "block_net": args["block_net"],
        "allow_domain": tuple(args["allow_domain"]),
        "network_profile": args["network_profile"],
        "listen_ports": tuple(args["listen_port"]),
        "credentials": tuple(args["credential"]),
        "env_credential_map": tuple(args["env_credential_map"]),
        "trust_override": args["trust_override"],
        "audit_sign_key": args.get("audit_sign_key"),
        "memory": args["memory"], "max_processes": args["max_processes"],
        "cpus": args["cpus"], "cpu_weight": args["cpu_weight"],
        "io_weight": args["io_weight"], "timeout": args["wall_clock"],
    }


def terminal_size() -> tuple[int, int] | None:
    """``(rows, cols)`` of the first of stdout, stdin, stderr that is a terminal."""
    for fd in (1, 0, 2):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        if size.lines > 0 and size.columns > 0:
            return size.lines, size.columns
    return None


def stdio_fds() -> tuple[list[int], list[int]]:
    """Our stdin/stdout/stderr (``/dev/null`` for a closed one), and what we opened."""
    fds: list[int] = []
    opened: list[int] = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            opened.append(null)
            fds.append(null)
    return fds, opened


def signum(name: str) -> int:
    return int(getattr(_signal, name))


class SignalPipe:
    """Turns signals into bytes on a pipe, so ``select`` can wait for them and for I/O.
    (``_signal``, not ``signal``: the latter builds enums of every signal at import.)"""

    def __init__(self, names: Sequence[str]) -> None:
        self._signal = _signal
        self.signums = [int(getattr(_signal, n)) for n in names if hasattr(_signal, n)]
        self._old: dict[int, object] = {}
        self.fd = -1
        self._write = -1
        self._old_wakeup = -1

    def __enter__(self) -> SignalPipe:
        self.fd, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup = self._signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for number in self.signums:
            self._old[number] = self._signal.signal(number, _ignore_signal)
        return self

    def read(self) -> list[int]:
        try:
            return list(os.read(self.fd, 512))
        except BlockingIOError:
            return []

    def __exit__(self, *_: object) -> None:
        for number, old in self._old.items():
            self._signal.signal(number, old)
        self._signal.set_wakeup_fd(self._old_wakeup)
        os.close(self.fd)
        os.close(self._write)


def _ignore_signal(number: int, frame: object) -> None:
    del number, frame  # delivered through the wakeup fd


def send_with_fds(sock: Transport, data: bytes, fds: Sequence[int]) -> int:
    """``socket.send_fds``; refused for descriptors in flight beyond our soft RLIMIT_NOFILE
    (ETOOMANYREFS: another process of this user holds many unreceived), once more under the
    hard limit, the most the kernel lets us count on."""
    import errno

    rights = [(_SOL_SOCKET, _SCM_RIGHTS,
               b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds))]
    try:
        return sock.sendmsg([data], rights)
    except OSError as exc:
        if exc.errno != errno.ETOOMANYREFS:
            raise
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == hard:
            raise
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return sock.sendmsg([data], rights)


def send_frame(sock: Transport, data: bytes, fds: Sequence[int]) -> None:
    """All of ``data``, the descriptors ``fds`` with its first bytes. Raises OSError with
    what to say as its ``strerror`` (``lost_message``)."""
    if fds:
        sent = send_with_fds(sock, data, fds)
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def lost_message(exc: OSError) -> str:
    """What a failed :func:`send_frame` means to the user."""
    import errno

    if exc.errno == errno.ETOOMANYREFS:
        return ("the kernel refused to pass this terminal's descriptors to nonod: your user "
                "has more descriptors in flight (sent over Unix sockets and not yet received) "
                "than this process's descriptor limit allows")
    return f"lost the connection to nonod: {exc.strerror or exc}"


_SOL_SOCKET: Final = 1  # Linux's values (nonod runs on Linux only)
_SCM_RIGHTS: Final = 1
_SO_PEERCRED: Final = 17


# ------------------------------------------------------------------------- the lean path


class Declined(Exception):
    """Not a command this module runs as the full path would: nothing was sent."""


class Untrusted(Exception):
    """The daemon's socket is listened on by ``uid``, neither us nor root: refused, nothing
    sent (said here, not declined: the full path would connect to it once more)."""

    def __init__(self, path: str, uid: int) -> None:
        super().__init__(path, uid)
        self.path = path
        self.uid = uid


def run(words: Sequence[str]) -> int | None:
    """Run ``nonoctl WORDS`` if it is a plain attached launch, ``ps`` or ``--version``; None
    (nothing done, nothing written) when it is not, for ``_cli.main`` to run."""
    if "--" not in words and _fastargs.command_word(words) == "ps":
        return _ps(words)
    if list(words) == ["--version"]:
        from nonod import __version__

        sys.stdout.write(f"nonoctl {__version__} (protocol {_wire.PROTOCOL_VERSION})\n")
        return 0
    try:
        request, path = _prepare(list(words))
        sock, codec = _open(path)
    except Declined:
        return None
    except Untrusted as exc:
        return _refuse_untrusted(exc, launching=True)
    except Lost as exc:
        return _failed(exc, launching=True)
    try:
        return attend(sock, codec, _hello(codec) + codec.text(request))
    except BaseException as exc:  # noqa: BLE001 - reported as the full path reports it
        from ._cli import report

        return report(exc, launching=True)
    finally:
        sock.close()


def _prepare(words: list[str]) -> tuple[str, str]:
    """The ``Launch`` message's JSON and the socket's path, or Declined."""
    command: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, command = words[:cut], words[cut + 1 :]
    if _fastargs.command_word(words) not in ("launch", "run") or _nono.refused_flag(words):
        raise Declined
    read = _fastargs.parse(_nono.join_env_credential_map(words))
    if read is None or read[0] not in ("launch", "run"):
        raise Declined
    values = read[1]
    notes: list[str] = []
    try:
        _nono.apply_environment(values, os.environ, with_profile=True, note=notes.append)
    except _nono.NonoVariableError:
        raise Declined from None
    if notes or values["json"] or values["detach"] or values["dry_run"] \
            or values["trust_override"] or (values["profile"] and values["profile_name"]):
        raise Declined
    env, dropped = _wire.kept_environment(os.environ.items())
    if dropped:
        raise Declined
    try:
        cwd = os.getcwd()
        options = option_values(values)
        given = values["profile"] or values["profile_name"]
        profile = profile_arg(None if given is None else str(given))
        _wire.check_options(options["audit_sign_key"],
                            ((key, options[key]) for key in _wire.OPTION_PATHS),
                            options["workdir"], options["env_credential_map"])
        _wire.check_launch(command, cwd, env, profile)
    except (OSError, ValueError):
        raise Declined from None
    size = terminal_size()
    # ``Launch``'s fields in its order, as msgspec writes them (no default left out)
    launch = {
        "type": "launch", "argv": command, "profile": profile, "cwd": cwd, "env": env,
        "options": options, "name": values["name"], "detach": False, "stdio": "passed",
        "term": None if size is None else {"rows": size[0], "cols": size[1]},
        "dry_run": False,
    }
    socket = values["socket"]
    path = (client_socket_path(system=bool(values["system"])) if socket is None
            else plain_path(str(socket)))
    return encode(launch), path


def encode(value: object) -> str:
    """``value`` as JSON, checked to be what msgspec would send (Declined otherwise: a
    string it cannot encode as UTF-8, a float it would write as null)."""
    parts: list[str] = []
    _encode(value, parts)
    text = "".join(parts)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: msgspec refuses it
        raise Declined from None
    return text


def _encode(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif type(value) is str:
        out.append(_quote(value))
    elif type(value) is int:
        out.append(str(value))
    elif type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise Declined  # msgspec writes null
        out.append(repr(value))
    elif type(value) in (list, tuple):
        out.append("[")
        items: Sequence[object] = value  # type: ignore[assignment]
        for index, item in enumerate(items):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif type(value) is dict:
        out.append("{")
        fields: dict[object, object] = value
        for index, (key, item) in enumerate(fields.items()):
            if type(key) is not str:
                raise Declined
            if index:
                out.append(",")
            out.append(_quote(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    else:
        raise Declined


def _hello(codec: _ws.ClientCodec) -> bytes:
    return codec.text(encode({"type": "hello", "protocol": _wire.PROTOCOL_VERSION,
                              "client": CLIENT_NAME}))


def _open(path: str) -> tuple[Any, _ws.ClientCodec]:
    """A connection to the daemon at ``path``, checked as ``client.connect_trusted`` checks
    one and upgraded to WebSocket. Declined when it cannot be made (the full path says why,
    or starts the daemon); once our daemon is on the line, Untrusted or Lost with the full
    client's words: declining then would have it connect (and log, and wait) a second time."""
    import _socket

    owners = {os.geteuid(), 0}
    directory, name = parent_and_name(path)
    try:
        real = trusted_socket_dir(directory, owners=owners)
    except (UnsafeSocketPath, OSError):
        raise Declined from None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(os.path.join(real, name) if name else real)
        cred = sock.getsockopt(_SOL_SOCKET, _SO_PEERCRED, 12)
    except OSError:
        sock.close()
        raise Declined from None
    uid = int.from_bytes(cred[4:8], sys.byteorder, signed=True)
    if uid not in owners:
        sock.close()
        raise Untrusted(path, uid)
    codec = _ws.ClientCodec(max_message=MAX_REPLY_BYTES)
    try:
        sock.sendall(codec.request("localhost", _wire.WS_RESOURCE, _wire.WS_SUBPROTOCOL))
        while True:
            data = sock.recv(65536)
            if not data:
                raise Lost("nonod closed the connection during the handshake")
            codec.receive_data(data)
            if codec.read_upgrade():
                return sock, codec
    except BaseException as exc:
        sock.close()
        if isinstance(exc, Lost):
            raise
        if isinstance(exc, (OSError, _ws.Rejected, _ws.ProtocolError)):
            raise Lost(handshake_failure(exc)) from None
        raise


def handshake_failure(exc: OSError | _ws.Rejected | _ws.ProtocolError) -> str:
    """What the full client says when the WebSocket upgrade fails with ``exc``."""
    if isinstance(exc, TimeoutError):
        return "nonod did not answer in time"
    if isinstance(exc, OSError):
        return f"lost the connection to nonod: {exc.strerror or exc}"
    if isinstance(exc, _ws.Rejected):
        text = exc.body.decode("utf-8", "replace").strip()
        return f"nonod refused the connection ({exc.status})" + (f": {text}" if text else "")
    return f"nonod broke the WebSocket protocol: {exc}"


# ------------------------------------------------------------------------------ ``ps``


_STATES: Final = ("starting", "running", "exited")


class _Row:
    """One session of a brief ``SessionList`` (``SessionRow``), as the table reads it."""

    __slots__ = ("argv", "exit_code", "id", "name", "parent", "pid", "profile", "signal",
                 "started_at", "state")

    def __init__(self, entry: dict[str, Any]) -> None:
        """Raises Declined for an entry the full decoder should read (or refuse)."""
        from datetime import datetime

        self.id = _typed(entry, "id", str)
        self.name = _typed(entry, "name", str)
        self.state = _typed(entry, "state", str)
        self.pid = _typed(entry, "pid", int, None)
        self.profile = _typed(entry, "profile", str, None)
        self.argv = _typed(entry, "argv", list, [])
        self.exit_code = _typed(entry, "exit_code", int, None)
        self.signal = _typed(entry, "signal", int, None)
        self.parent = _typed(entry, "parent", str, None)
        if self.state not in _STATES or any(type(arg) is not str for arg in self.argv):
            raise Declined
        try:
            self.started_at = datetime.fromisoformat(_typed(entry, "started_at", str))
        except ValueError:
            raise Declined from None


_REQUIRED: Final = object()


def _typed(entry: dict[str, Any], key: str, kind: type, default: object = _REQUIRED) -> Any:
    value = entry.get(key, default)
    if value is _REQUIRED or not (type(value) is kind or (value is None and default is None)):
        raise Declined
    return value


def _ps(words: Sequence[str]) -> int | None:
    """``nonoctl ps [-a] [-q]``: one request, one reply, one table. It changes nothing, so
    anything this module does not read plainly (an error, a message it cannot check, a
    broken connection) declines even after the request: the full path asks again and says
    what it always said."""
    read = _fastargs.parse(words)
    if read is None or read[0] != "ps" or read[1]["json"]:
        return None
    values = read[1]
    socket = values["socket"]
    path = (client_socket_path(system=bool(values["system"])) if socket is None
            else plain_path(str(socket)))
    try:
        sock, codec = _open(path)
    except Declined:
        return None
    except Untrusted as exc:
        return _refuse_untrusted(exc, launching=False)
    except Lost as exc:
        return _failed(exc, launching=False)
    try:
        request = {"type": "list", "all": True, "brief": True} if values["all"] \
            else {"type": "list", "brief": True}  # ``ListSessions``: defaults left out
        rows = _sessions(sock, codec, _hello(codec) + codec.text(encode(request)))
    except TimeoutError as exc:
        return _failed(Lost(handshake_failure(exc)), launching=False)
    except (Declined, OSError, _ws.ProtocolError):
        return None
    finally:
        try:
            sock.sendall(codec.close(1000))
        except OSError:
            pass
        sock.close()
    if values["quiet"]:
        if not all(row.id.isprintable() for row in rows):
            return None  # escaped by ``Output.line``
        text = "".join(row.id + "\n" for row in rows)
    else:
        import time

        from ._table import sessions_table

        text = sessions_table(rows, time.time())
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BaseException as exc:  # noqa: BLE001 - reported as the full path reports it
        from ._cli import report

        return report(exc, launching=False)
    return 0


def _refuse_untrusted(exc: Untrusted, *, launching: bool) -> int:
    from ._cli import report
    from .client import untrusted_peer

    return report(untrusted_peer(exc.path, exc.uid), launching=launching)


def _failed(exc: Lost, *, launching: bool) -> int:
    """Say ``exc`` as the full path says a ``ConnectionLost``."""
    from ._cli import report
    from .client import ConnectionLost

    return report(ConnectionLost(exc.message), launching=launching)


def _sessions(sock: Any, codec: _ws.ClientCodec, frames: bytes) -> list[_Row]:
    """Send ``frames``; the rows of the ``sessions`` reply that follows the ``welcome``."""
    sock.sendall(frames)
    texts: list[str] = []
    welcomed = False
    while len(texts) < 2:
        data = sock.recv(65536)
        if not data:
            raise Declined
        codec.receive_data(data)
        for event in codec.events():
            if not isinstance(event, _ws.Text):
                raise Declined
            texts.append(event.data)
        if texts and not welcomed:
            welcome = _plain(texts[0])
            if welcome is None or not fits(welcome, "Welcome"):
                raise Declined
            welcomed = True
            sock.settimeout(None)  # as the full client once welcomed: the list may take long
    reply = _plain(texts[1])
    if len(texts) != 2 or reply is None or not fits(reply, "SessionList"):
        raise Declined
    return [_Row(entry) if type(entry) is dict else _refuse() for entry in reply["sessions"]]


def _refuse() -> _Row:
    raise Declined


# ------------------------------------------------------------------- the conversation


class Lost(Exception):
    """The connection broke (``client.ConnectionLost``'s message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Conversation:
    """The replies of one attached launch, read plainly where they can be."""

    def __init__(self, sock: Transport, codec: _ws.ClientCodec) -> None:
        self.sock = sock
        self.codec = codec
        self.closed = False
        self.close_code = 0
        self.close_reason = ""
        self.awaiting_welcome = True
        self.replies: list[tuple[str, Any]] = []

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        try:
            send_frame(self.sock, data, fds)
        except OSError as exc:
            self.closed = True
            raise Lost(lost_message(exc)) from exc

    def close(self) -> None:
        if not self.closed:
            try:
                self.send(self.codec.close(1000))
            except Lost:
                pass
            self.closed = True

    def receive_available(self) -> list[tuple[str, Any]]:
        """As ``Connection.receive_available``: read once, every complete reply."""
        if not self.replies:
            self._raise_if_closed()
            self._receive()
            if not self.replies:
                self._raise_if_closed()
        out = self.replies
        self.replies = []
        return out

    def _raise_if_closed(self) -> None:
        if self.closed:
            code, reason = self.close_code, self.close_reason
            detail = f" (code {code}{': ' + reason if reason else ''})" if code else ""
            raise Lost(f"nonod closed the connection{detail}")

    def _receive(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError as exc:
            raise Lost("nonod did not answer in time") from exc
        except OSError as exc:
            self.closed = True
            raise Lost(f"lost the connection to nonod: {exc.strerror or exc}") from exc
        if not data:
            self.closed = True
            return
        self.codec.receive_data(data)
        try:
            for event in self.codec.events():
                if isinstance(event, _ws.Text):
                    self._text(event.data)
                elif isinstance(event, _ws.Ping):
                    self.send(self.codec.pong(event.payload))
                elif isinstance(event, _ws.Close):
                    try:
                        self.send(self.codec.close(event.code if event.code != 1005 else 1000))
                    except Lost:
                        pass
                    self.closed = True
                    self.close_reason = event.reason
                    self.close_code = event.code
                    return
                else:
                    from .client import UnexpectedReply

                    raise UnexpectedReply("nonod sent a binary frame")
        except _ws.ProtocolError as exc:
            self.closed = True
            raise Lost(f"nonod broke the WebSocket protocol: {exc}") from None

    def _text(self, text: str) -> None:
        message = _plain(text)
        if self.awaiting_welcome:
            self.awaiting_welcome = False
            if message is None or not fits(message, "Welcome"):
                self._welcome_slowly(text)
            self.sock.settimeout(None)
            return
        kind = None if message is None else message.get("type")
        if message is not None and kind == "launched" and fits(message, "Launched"):
            session = message["session"]
            if not _warns(session):
                self.replies.append(("launched", session["id"]))
                return
        elif message is not None and kind == "exited" and fits(message, "Exited"):
            self.replies.append(("exited", _status(message.get("exit_code"),
                                                   message.get("signal"))))
            return
        self.replies.append(_slowly(text))

    def _welcome_slowly(self, text: str) -> None:
        """The full client's answer to a hello reply this module does not read plainly."""
        from nonod import protocol as p

        from .client import RemoteError, UnexpectedReply, _tag

        reply = _decode(text)
        if isinstance(reply, p.ErrorReply):
            self.close()
            raise RemoteError(reply)
        if not isinstance(reply, p.Welcome):
            self.close()
            raise UnexpectedReply(f"the daemon answered hello with `{_tag(reply)}`")


def fits(message: dict[str, Any], name: str) -> bool:
    """``nonod._shapes.fits``, imported once a reply is read (not by a command declined)."""
    from nonod._shapes import fits as fits_shape

    return fits_shape(message, name)


def _plain(text: str) -> dict[str, Any] | None:
    """The JSON object ``text`` holds, or None (for the full decoder to say why)."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    return value if end == len(text) and type(value) is dict else None


def _warns(session: dict[str, Any]) -> bool:
    """Whether ``Output.enforcement_warning`` would say anything of this session (or this
    module cannot tell)."""
    enforcement = session.get("enforcement")
    if enforcement is not None and (type(enforcement) is not dict
                                    or enforcement.get("fully_enforced") is not True):
        return True
    return any(session.get(key, ()) != [] for key in ("secret_env", "weakened",
                                                      "secrets_bound"))


def _status(exit_code: int | None, signal: int | None) -> int:
    """``_cli.shell_status``: 128 + the signal, the exit code, or 1."""
    if signal is not None:
        return 128 + signal
    return exit_code if exit_code is not None else EXIT_FAILURE


def _decode(text: str) -> Any:
    """``Connection._decode``: the full decoder, or UnexpectedReply."""
    from nonod import protocol as p

    from .client import UnexpectedReply

    try:
        return p.decode_reply(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise UnexpectedReply(f"cannot decode a message from nonod: {exc}") from exc


def _slowly(text: str) -> tuple[str, Any]:
    """A reply read by the full decoder: ``("launched", SessionDetail)``, ``("exited",
    status)``, ``("error", ErrorReply)`` or ``("other", reply)``."""
    from nonod import protocol as p

    reply = _decode(text)
    if isinstance(reply, p.Launched):
        return "launched", reply.session
    if isinstance(reply, p.Exited):
        return "exited", _status(reply.exit_code, reply.signal)
    if isinstance(reply, p.ErrorReply):
        return "error", reply
    return "other", reply


def attend(sock: Transport, codec: _ws.ClientCodec, frames: bytes,
           out: Output | None = None) -> int:
    """Send ``frames`` (a ``hello`` and an attached ``Launch``, stdio passed) with our stdio
    and run the session on our terminal: forward signals, exit with the program.

    Errors before the session exists are raised as the full client raises them
    (``ConnectionLost``, ``RemoteError``, ...); ``out`` (made when first needed if None)
    says the ones that come after, and the session's warnings."""
    import select
    import time

    conv = _Conversation(sock, codec)
    fds, opened = stdio_fds()
    stopping = frozenset(signum(name) for name in STOPPING)
    session_id: str | None = None
    queued: list[int] = []
    stop_deadline: float | None = None
    try:
        with SignalPipe(FORWARDED_SIGNALS) as signals:
            try:
                conv.send(frames, fds)
            finally:
                for fd in opened:
                    os.close(fd)
            while True:
                fileno = sock.fileno()
                timeout = (None if stop_deadline is None
                           else max(0.0, stop_deadline - time.monotonic()))
                ready = ([fileno] if conv.replies
                         else select.select([fileno, signals.fd], [], [], timeout)[0])
                if signals.fd in ready:
                    queued += signals.read()
                if session_id is None and stopping.intersection(queued):
                    # The program may already run, its `launched` reply on the way: give
                    # the daemon a moment to say so (the signal is then forwarded).
                    # Otherwise nonoctl itself was interrupted; closing the connection stops
                    # the session should the daemon still create it.
                    if stop_deadline is None:
                        stop_deadline = time.monotonic() + LAUNCHED_GRACE
                    elif fileno not in ready and time.monotonic() >= stop_deadline:
                        _output(out).error("interrupted before the session started")
                        return EXIT_INTERRUPTED
                if session_id is not None:
                    for number in queued:
                        conv.send(_signal_frame(codec, session_id, number))
                    queued.clear()
                if fileno not in ready:
                    continue
                try:
                    replies = conv.receive_available()
                except Lost as exc:
                    if session_id is None:
                        raise
                    _output(out).error(f"{exc.message}: session {session_id} ends with its "
                                       "attached client (or went down with the daemon)")
                    return EXIT_DAEMON
                for kind, value in replies:
                    if kind == "launched":
                        if not isinstance(value, str):  # a SessionDetail with a warning
                            out = _output(out)
                            out.enforcement_warning(value)
                            value = value.id
                        session_id = value
                        stop_deadline = None
                        for number in queued:
                            conv.send(_signal_frame(codec, session_id, number))
                        queued.clear()
                    elif kind == "exited":
                        return int(value)
                    elif kind == "error" and session_id is None:
                        from .client import RemoteError

                        raise RemoteError(value)
                    elif kind == "error":
                        out = _output(out)
                        out.error(value.message, value.hint)
    except Lost as exc:
        from .client import ConnectionLost

        raise ConnectionLost(exc.message) from None
    finally:
        conv.close()


def _signal_frame(codec: _ws.ClientCodec, session: str, number: int) -> bytes:
    return codec.text(encode({"type": "signal", "session": session, "signal": number}))


def _output(out: Output | None) -> Output:
    """``out``, or the plain ``Output`` the full path would have (``--json`` declines)."""
    if out is not None:
        return out
    from ._output import Output

    return Output(json=False)
