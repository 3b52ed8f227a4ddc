"""The control plane: the protocol nonoctl speaks, the socket it connects to, the server.

``nonoctl`` imports :func:`client_socket_path` (and the leaf :mod:`nonod.protocol`) on its hot
path, so importing this package must stay cheap: the server (and with it trio) is loaded only
when one of its names is first used.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no ``typing`` at run time: ``nonoctl._lean`` imports this package

if TYPE_CHECKING:
    from ._contracts import DaemonInfo as DaemonInfo
    from ._contracts import PolicySource as PolicySource
    from ._contracts import SecretStore as SecretStore
    from ._contracts import ServerSettings as ServerSettings
    from ._contracts import TrustService as TrustService
    from ._errors import AuthRefused as AuthRefused
    from ._errors import ProtocolError as ProtocolError
    from ._errors import UsageError as UsageError
    from ._errors import error_reply as error_reply
    from ._server import ControlServer as ControlServer
    from ._socket import BoundSocket as BoundSocket
    from ._socket import DaemonRunning as DaemonRunning
    from ._socket import SocketError as SocketError
    from ._socket import activated_socket as activated_socket
    from ._socket import bind_control_socket as bind_control_socket
    from ._socket import client_socket_path as client_socket_path
    from ._socket import default_socket_path as default_socket_path

_LAZY = {
    "AuthRefused": "._errors",
    "ControlServer": "._server",
    "DaemonInfo": "._contracts",
    "PolicySource": "._contracts",
    "ProtocolError": "._errors",
    "SecretStore": "._contracts",
    "ServerSettings": "._contracts",
    "TrustService": "._contracts",
    "UsageError": "._errors",
    "error_reply": "._errors",
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
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_LAZY)
