"""The control plane: the protocol nonoctl speaks, the socket it connects to, the server.

``nonoctl`` imports :func:`client_socket_path` (and the leaf :mod:`nonod.protocol`) on its hot
path, so importing this package must stay cheap: the server (and with it trio) is loaded only
when one of its names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._server import AuthRefused as AuthRefused
    from ._server import ControlServer as ControlServer
    from ._server import DaemonInfo as DaemonInfo
    from ._server import PolicySource as PolicySource
    from ._server import ProtocolError as ProtocolError
    from ._server import ServerSettings as ServerSettings
    from ._server import UsageError as UsageError
    from ._server import error_reply as error_reply
    from ._socket import BoundSocket as BoundSocket
    from ._socket import DaemonRunning as DaemonRunning
    from ._socket import SocketError as SocketError
    from ._socket import activated_socket as activated_socket
    from ._socket import bind_control_socket as bind_control_socket
    from ._socket import client_socket_path as client_socket_path
    from ._socket import default_socket_path as default_socket_path

_LAZY = {
    "AuthRefused": "._server",
    "ControlServer": "._server",
    "DaemonInfo": "._server",
    "PolicySource": "._server",
    "ProtocolError": "._server",
    "ServerSettings": "._server",
    "UsageError": "._server",
    "error_reply": "._server",
    "BoundSocket": "._socket",
    "DaemonRunning": "._socket",
    "SocketError": "._socket",
    "activated_socket": "._socket",
    "bind_control_socket": "._socket",
    "client_socket_path": "._socket",
    "default_socket_path": "._socket",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_LAZY)
