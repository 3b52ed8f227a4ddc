"""The profile of a tool's child session, written from its ``command_policies`` entry.

A tool's session is an ordinary session: the daemon writes a nono profile for it (this
module) and resolves it with the same code as any profile, against the same user and working
directory as the agent's session. It starts from the built-in base groups (system paths to
read, secrets denied), like every profile, and adds only what the tool's sandbox names:

- ``fs_read``/``fs_write``/``fs_read_file``/``fs_write_file`` (``.`` is the agent's working
  directory) and the tool's executable, readable;
- ``network.allow_domain``; no ``network`` section (and no credential) means no network;
- each credential it is granted, as a ``custom_credentials`` route with its
  ``endpoint_policy``: its phantom token in ``env_var``, its base URL in ``<NAME>_BASE_URL``;
- ``environment.allow_vars``/``set_vars``.

Nothing of the agent's profile is inherited: not its grants, not its hosts, not its
credentials.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Mapping
from typing import Any

import msgspec

from ._fslook import FsLook
from ._tools import CommandPolicies, CommandPolicy, ToolEdge, ToolSandbox

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def find_executable(name: str, command: CommandPolicy, env: Mapping[str, str],
                    look: FsLook) -> str | None:
    """The canonical path of the tool: its pinned ``executable``, or the first file ``name``
    on the caller's ``PATH``; None when there is none. Looked at through ``look``, so a cached
    resolution is not reused once the answer would change."""
    if command.executable is not None:
        candidates = [command.executable]
    else:
        path = env.get("PATH") or DEFAULT_PATH
        candidates = [posixpath.join(d, name) for d in path.split(":") if d.startswith("/")]
    for candidate in candidates:
        if look.stat(candidate) == stat.S_IFREG:
            return look.realpath(candidate)
    return None


def _paths(entries: tuple[str, ...]) -> list[str]:
    """nono's relative tool paths are relative to the working directory."""
    out = []
    for entry in entries:
        if entry in (".", "./"):
            out.append("$WORKDIR")
        elif entry.startswith("./"):
            out.append("$WORKDIR/" + entry[2:])
        elif not entry.startswith(("/", "~", "$")):
            out.append("$WORKDIR/" + entry)
        else:
            out.append(entry)
    return out


def _credential(section: CommandPolicies, name: str, endpoint_policy: msgspec.Raw
                ) -> dict[str, Any]:
    cred = section.credentials[name]
    route: dict[str, Any] = {"upstream": cred.upstream, "credential_key": cred.credential_key}
    for key in ("env_var", "inject_header", "credential_format", "tls_ca", "tls_client_cert",
                "tls_client_key"):
        value = getattr(cred, key)
        if value is not None:
            route[key] = value
    if bytes(endpoint_policy).strip() not in (b"", b"null"):
        route["endpoint_policy"] = msgspec.json.decode(endpoint_policy)
    return route


def child_profile(section: CommandPolicies, name: str, edge: ToolEdge, executable: str,
                  parent: str) -> bytes:
    """The child session's profile (nono JSON) for ``name`` called from the agent."""
    sandbox: ToolSandbox = edge.sandbox
    fs: dict[str, list[str]] = {
        "read": _paths(sandbox.fs_read),
        "write": _paths(sandbox.fs_write),
        "read_file": [*_paths(sandbox.fs_read_file), executable],
        "write_file": _paths(sandbox.fs_write_file),
    }
    routes = {g.name: _credential(section, g.name, g.endpoint_policy)
              for g in sandbox.grants()}
    domains = list(sandbox.network.allow_domain) if sandbox.network is not None else []
    network: dict[str, Any]
    if domains or routes:
        network = {"allow_domain": domains}
        if routes:
            network["custom_credentials"] = routes
            network["credentials"] = list(routes)
    else:
        network = {"block": True}
    profile: dict[str, Any] = {
        "meta": {"name": f"{parent}/{name}"},
        "filesystem": {key: value for key, value in fs.items() if value},
        "network": network,
    }
    env = sandbox.environment
    if env is not None:
        profile["environment"] = {"allow_vars": list(env.allow_vars),
                                  "set_vars": dict(env.set_vars)}
    return msgspec.json.encode(profile)
