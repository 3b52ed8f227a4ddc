"""Files the daemon reads secrets from: hidden in every session, whatever the profile grants.

A phantom token is pointless if the program can read the real key from disk: a route whose
key is ``file:///home/me/creds/token`` under a granted ``$HOME``, a ``file://`` audit or trust
signing key, the daemon's own ``nonod.toml``, state directory or systemd credentials. Every
launch therefore adds a deny mask for each such path (its canonical path: a symlink to it
leads to the mask), the same way the deny groups are masked (``nonod.sandbox``: an empty
mode-000 mount in the session's mount namespace).

The paths come from three places: the daemon's own (``DaemonSecrets``), the launch's policy
and signing key (:func:`launch_secret_paths`), and every credential file an earlier launch
of the same user used (:class:`SecretFileLog`, kept in the state directory, so that a key
file used once stays hidden from every later session of that user, of any profile).

A mount hides one name of a file, not its inode: a hard link elsewhere in the view would
still read the key. A secret *file* with more than one link is therefore refused
(``policy.secret_file``) with its path, rather than launched with a mask that may not hold.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import structlog

from .errors import PolicyError
from .policy import Denial, ResolvedPolicy

log = structlog.get_logger()

LOG_FILE: Final = "secret-files.json"
_MAX_LOGGED: Final = 4096
_FILE_REF: Final = "file://"


class SecretFileError(PolicyError):
    """A file holding a secret cannot be kept out of the session."""

    code = "policy.secret_file"


@dataclass(frozen=True)
class SecretPath:
    """A path the daemon reads secrets from, and why (for messages; never the content)."""

    path: str
    why: str


def _file_ref_path(reference: str | None) -> str | None:
    if reference and reference.startswith(_FILE_REF):
        path = reference[len(_FILE_REF):]
        return path if path.startswith("/") else None
    return None


def launch_secret_paths(policy: ResolvedPolicy, *, audit_sign_key: str | None
                        ) -> list[SecretPath]:
    """The secret files this launch makes the daemon read: ``file://`` credential sources of
    its routes and ``env_credentials``, TLS client keys, and a ``file://`` audit signing key
    (with its ``.pub``: a key pair is one secret); and its tools' (``command_policies``),
    whose sessions read theirs at the agent's calls: the agent's view must not hold what its
    tools are there to keep from it (redteam33)."""
    from .credentials import CredentialError, session_routes

    out: list[SecretPath] = []
    net = policy.network
    try:
        routes = session_routes(net)
    except CredentialError:
        routes = ()  # a bad route refuses the launch later, with its own error
    for route in routes:
        if (path := _file_ref_path(route.credential_key)) is not None:
            out.append(SecretPath(path, f"credential of route {route.name}"))
        if route.tls_client_key and route.tls_client_key.startswith("/"):
            out.append(SecretPath(route.tls_client_key, f"TLS client key of route {route.name}"))
    for reference, variable in net.env_credentials:
        if (path := _file_ref_path(reference)) is not None:
            out.append(SecretPath(path, f"env_credentials source of {variable}"))
    if (path := _file_ref_path(audit_sign_key)) is not None:
        out.append(SecretPath(path, "audit signing key"))
        out.append(SecretPath(path + ".pub", "audit signing key"))
    for tool in policy.tools:
        if tool.policy is not None:
            out += [SecretPath(secret.path, f"tool {tool.name}'s {secret.why}") for secret
                    in launch_secret_paths(tool.policy, audit_sign_key=None)]
    return out


@dataclass(frozen=True)
class DaemonSecrets:
    """The daemon's own files: configuration, state (records, audit, keys), the systemd
    credentials directory, and the ``[audit] sign_key`` when it is a file."""

    config_file: str | None
    state_dir: str
    credentials_dir: str | None = None

    def paths(self, *, audit_sign_key: str | None = None) -> list[SecretPath]:
        out = [SecretPath(self.state_dir, "the daemon's state directory")]
        if self.config_file:
            out.append(SecretPath(self.config_file, "the daemon's configuration"))
        if self.credentials_dir:
            out.append(SecretPath(self.credentials_dir, "the daemon's systemd credentials"))
        if (path := _file_ref_path(audit_sign_key)) is not None:
            out.append(SecretPath(path, "the daemon's audit signing key"))
            out.append(SecretPath(path + ".pub", "the daemon's audit signing key"))
        return out


def secret_denials(paths: Iterable[SecretPath], *, check_links: bool = True
                   ) -> tuple[Denial, ...]:
    """A deny mask per existing secret path, at its canonical path (a symlink to it leads to
    the mask). Blocking (``stat``). With ``check_links``, a secret file with more than one hard
    link raises SecretFileError."""
    denials: dict[str, Denial] = {}
    for secret in paths:
        try:
            real = os.path.realpath(secret.path)
            st = os.stat(real)
        except OSError:
            continue  # absent: nothing to read (a credential then fails with its own error)
        is_file = not stat.S_ISDIR(st.st_mode)
        if check_links and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise SecretFileError(
                f"{secret.path} ({secret.why}) has {st.st_nlink} hard links: another name for "
                "it could be visible in the session, and a mask hides only one name",
                hint="keep a single link to the file (find the others with "
                f"`find / -xdev -samefile {secret.path}`), then launch again",
            )
        denials[real] = Denial(path=real, is_file=is_file, source="secret")
    return tuple(denials.values())


def with_secrets_hidden(policy: ResolvedPolicy, denials: tuple[Denial, ...]) -> ResolvedPolicy:
    """``policy`` with the secret masks added (those it does not already deny)."""
    import msgspec

    have = {d.path for d in policy.denials}
    extra = tuple(d for d in denials if d.path not in have)
    if not extra:
        return policy
    return msgspec.structs.replace(policy, denials=(*policy.denials, *extra))


@final
class SecretFileLog:
    """Every credential file a launch of this daemon has used, kept in its state directory,
    so that each stays hidden from every later session (not only from its own).

    Each path is remembered for the uid whose launch named it, and masked in that uid's later
    sessions only (None: the daemon's own, such as trust keys, masked in everyone's): on the
    system daemon one user names paths in a launch, and must not choose what another user's
    sessions may read. At most :data:`_MAX_LOGGED` paths per uid."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / LOG_FILE
        self._known: dict[tuple[int | None, str], str] = {}
        self._loaded = False
        # Launches and the trust service call in from worker threads.
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            data = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("cannot read the secret file log; starting a new one",
                        path=str(self._path), error=str(exc))
            return
        if isinstance(data, dict) and isinstance(data.get("paths"), list):
            for entry in data["paths"]:
                if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                    uid = entry.get("uid")
                    self._known[(uid if isinstance(uid, int) else None, entry["path"])] = \
                        str(entry.get("why", ""))
        elif isinstance(data, dict):  # the first format: every path, for everyone
            self._known = {(None, str(k)): str(v) for k, v in data.items()}

    def paths(self, uid: int | None = None) -> list[SecretPath]:
        """Blocking. The paths to mask in a session of ``uid``: its own and the daemon's."""
        with self._lock:
            self._load()
            return [SecretPath(path, why) for (owner, path), why in self._known.items()
                    if owner is None or owner == uid]

    def remember(self, paths: Iterable[SecretPath], uid: int | None = None) -> None:
        """Blocking. Add ``paths`` for ``uid``'s later sessions (None: everyone's); rewrite
        the log (0600, atomically) if anything is new."""
        with self._lock:
            self._remember(paths, uid)

    def _remember(self, paths: Iterable[SecretPath], uid: int | None) -> None:
        self._load()
        new = {(uid, s.path): s.why for s in paths if (uid, s.path) not in self._known}
        held = sum(1 for owner, _ in self._known if owner == uid)
        if not new or held >= _MAX_LOGGED:
            return
        self._known.update(new)
        entries = [{"path": path, "uid": owner, "why": why}
                   for (owner, path), why in sorted(self._known.items(),
                                                    key=lambda item: (item[0][1],
                                                                      item[0][0] or -1))]
        tmp = self._path.with_name(LOG_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": 2, "paths": entries}, f)
        os.replace(tmp, self._path)
