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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from ..errors import ProfileError
from ..policy import Grant, ResolvedPolicy, ToolPolicy
from ._fslook import FsLook
from ._schema import TlsInterceptConfig
from ._tools import CommandPolicies, CommandPolicy, ToolEdge, ToolSandbox, decode_section, key_path

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Granted as such, these are the session's own tmpfs, never the host's directory
#: (``nonod.sandbox._mounts.PRIVATE_TMP``; a test keeps the two equal).
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")


def find_executable(name: str, command: CommandPolicy, env: Mapping[str, str],
                    look: FsLook, crossed: list[str] | None = None) -> str | None:
    """The canonical path of the tool: its pinned ``executable``, or the first file ``name``
    on the caller's ``PATH``; None when there is none. Looked at through ``look``, so a cached
    resolution is not reused once the answer would change. ``crossed`` receives the symbolic
    links followed to it."""
    if command.executable is not None:
        candidates = [command.executable]
    else:
        path = env.get("PATH") or DEFAULT_PATH
        candidates = [posixpath.join(d, name) for d in path.split(":") if d.startswith("/")]
    for candidate in candidates:
        if look.stat(candidate) == stat.S_IFREG:
            return look.realpath(candidate, crossed)
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
                  parent: str, tls_intercept: TlsInterceptConfig | None = None) -> bytes:
    """The child session's profile (nono JSON) for ``name`` called from the agent. The
    agent's ``network.tls_intercept`` carries over to a tool with credential routes: then a
    tool that talks HTTPS to its host itself (``gh`` through ``HTTPS_PROXY``) has its phantom
    token swapped too, where the daemon intercepts TLS."""
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
            if tls_intercept is not None:
                network["tls_intercept"] = msgspec.to_builtins(tls_intercept)
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


def _writable(path: str, grants: Sequence[Grant]) -> Grant | None:
    """The agent's grant that lets it write ``path`` or its directory, if any."""
    directory = posixpath.dirname(path)
    for grant in grants:
        if not grant.access.writes or (grant.path in PRIVATE_TMP and not grant.is_file):
            continue
        if grant.is_file and grant.path in (path, directory):
            return grant
        if not grant.is_file and (directory == grant.path
                                  or directory.startswith(grant.path.rstrip("/") + "/")):
            return grant
    return None


class _Found(NamedTuple):
    """A command of the section, found and resolved, before the rewrite checks."""

    name: str
    command: CommandPolicy
    where: str
    executable: str
    crossed: list[str]
    child: ResolvedPolicy | None
    invocation: str


def resolve_tools(
    raw: msgspec.Raw, source: str, *, env: Mapping[str, str], look: FsLook,
    tls_intercept: TlsInterceptConfig | None,
    agent_grants: Sequence[Grant], note: Callable[..., None],
    resolve_child: Callable[[bytes, str], ResolvedPolicy],
) -> tuple[ToolPolicy, ...]:
    """Each command of ``command_policies`` (``raw``): where it is, and the policy of the
    child session it runs in (``resolve_child`` resolves the profile written for it).

    A tool the agent could rewrite (its executable or the directory holding it writable under
    the agent's own grants, or under another tool's, whose arguments and input the agent
    chooses) would run the agent's code with the tool's credentials: refused, unless the
    command says ``allow_writable_executable`` (nono's per-command downgrade)."""
    section = decode_section(raw, source)
    if section is None:
        return ()
    found: list[_Found] = []
    seen: dict[str, str] = {}
    for name, command in section.commands.items():
        where = key_path("$.command_policies.commands", name)
        crossed: list[str] = []
        executable = find_executable(name, command, env, look, crossed)
        if executable is None:
            note("tool_missing",
                 f"the tool `{name}` is not on PATH (or its `executable` does not exist): "
                 "the session cannot run it, and nothing is masked for it",
                 source="command_policies")
            continue
        if executable in seen:
            raise ProfileError(f"`{name}` and `{seen[executable]}` are the same file "
                               f"({executable}): one mask cannot tell them apart",
                               source=source, path=where)
        seen[executable] = name
        edge = command.for_session(where, source)
        child, invocation = None, ""
        if edge != "deny":
            child = resolve_child(child_profile(section, name, edge, executable, source,
                                                tls_intercept), f"{source}/{name}")
            if edge.invocation_policy:
                invocation = msgspec.json.encode(edge.invocation_policy).decode()
        found.append(_Found(name, command, where, executable, crossed, child, invocation))
    # Who could change what a tool runs: the agent, and every tool the agent calls (its argv
    # and stdin are the agent's: `tee tools/gh` wrote another tool's file, redteam33).
    writers = [("the session", agent_grants)] + [
        (f"the tool `{tool.name}` (which the session calls)", tool.child.grants)
        for tool in found if tool.child is not None]
    tools: list[ToolPolicy] = []
    for name, command, where, executable, crossed, child, invocation in found:
        writable = next(((who, grant) for who, grants in writers
                         if (grant := _writable(executable, grants)) is not None), None)
        if writable is not None and not command.allow_writable_executable:
            who, grant = writable
            raise ProfileError(
                f"{who} may write {grant.path}, so it could change `{name}` "
                f"({executable}), which then runs with the tool's own grants and credentials",
                source=source, path=where,
                hint="install the tool where the session and its tools cannot write, or set "
                "`allow_writable_executable: true` on the command to accept the risk")
        link = next((link for link in crossed for _, grants in writers
                     if _writable(link, grants)), None)
        if link is not None and not command.allow_writable_executable:
            raise ProfileError(
                f"`{name}` is found through the symbolic link {link}, which the session (or "
                "a tool it calls) may replace: the next launch would run what it points the "
                "link at with the tool's own grants and credentials",
                source=source, path=where,
                hint=f"name the tool by its real path in `executable` ({executable})")
        rewritable = link or ""
        if writable is not None:
            who, grant = writable
            rewritable = grant.path if who == "the session" else f"{grant.path}, by {who}"
        tools.append(ToolPolicy(name=name, executable=executable, policy=child,
                                invocation=invocation, rewritable=rewritable))
    return tuple(tools)
