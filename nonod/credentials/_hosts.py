"""Where each secret has been sent: a secret goes to the upstreams it went to before, and to
another only when its owner says so (``nonoctl secret hosts NAME --add URL``).

A profile names a route's secret by reference (``credential_key``: a keychain account such as
``github_token``, ``env://OPENAI_API_KEY``, ``file:///run/keys/token``). A profile from a
repository can guess the names people use, and route one to a host of its own: the daemon would
put the real value into the requests it forwards there. So the first launch that routes a
reference binds it to that route's upstream (scheme, host and port), the launch says so, and a
later route of the same reference to any other upstream refuses the launch
(:class:`~._errors.SecretElsewhere`) until its owner adds the upstream. Bindings are per user
(the system daemon's callers each have their own; None is the daemon's own) and kept in the
state directory (``secret-hosts.json``, 0600, replaced atomically and made durable before
the launch goes on).

A binding belongs to the secret, not to its spelling (review23): ``github_token``,
``keyring://nono/github_token`` and ``keyring://nono/github_token?decode=go-keyring`` read one
keychain entry, ``file:////run//keys/token`` and a path through a directory link the
repository ships read one file. :func:`secret_key` is the one spelling (the keychain's plain
account name; a file's path with its links resolved, as the caller, at launch), and the
file, the note, the refusal and ``secret hosts`` all use it.

The first launch is trusted: a reference first routed by a hostile profile is bound to its
host; the note at launch, and the refusal of the user's own profile afterwards, show it.

A launch's new bindings are provisional until its program exists (known1): made and saved
when it is prepared (a second launch routing the same reference elsewhere meanwhile is
refused, as it would be later), kept for good once the program exists
(:meth:`SecretHosts.confirm`), undone if the launch is refused (:meth:`SecretHosts.withdraw`:
a gate that drops it, a ``chdir`` the engine refuses). The file marks a provisional binding
(``"pending": true``), and the mark is taken off once its launch's program exists
(:meth:`SecretHosts.save_confirmed`, in a worker thread after the launch, not on its path):
a daemon killed before its launch was settled leaves it marked, and the next daemon
withdraws it when it reads the file (known2). A launch that routes a reference to
a host a provisional binding names relies on it too: the binding is undone only when every
launch relying on it was refused. The undoing is a file write on the refusal's path, none on
a launch's that runs. ``nonoctl secret hosts --add`` or ``--clear`` of a reference settles
its binding as the user says.

The program's environment (``env_credentials``, ``--env-credential-map``) is one more place a
secret is sent, spelled :data:`ENVIRONMENT`: from there it goes wherever the session's network
reaches, so a secret bound to its hosts is not put there unless its owner adds it, and one
first put there is not sent to a route's upstream unless its owner adds that (redteam33).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final
from urllib.parse import urlsplit

import structlog

from .._callerfs import Identity, acting_as
from ._errors import BadReference, CredentialError, SecretElsewhere, SecretHostsError
from ._sources import _SYSTEMD_NAME, KEYRING_SERVICE, parse_credential_ref

log = structlog.get_logger()

HOSTS_FILE: Final = "secret-hosts.json"
#: Bounds: references per user, upstreams per reference, and the bytes of one user's
#: bindings in the file. One file holds every user's (the system daemon's callers): a user's
#: share is bounded so that no user can make it too large to read back at the next start,
#: which would refuse every user's launches with routes (review23).
MAX_REFERENCES: Final = 512
MAX_ORIGINS: Final = 32
MAX_USER_BYTES: Final = 128 * 1024
_MAX_FILE: Final = 64 * 1024 * 1024
_MAX_HOST: Final = 253  # a DNS name's length
_SLASHES: Final = re.compile(r"/{2,}")
#: Where ``env_credentials`` send a secret: the program's environment (never a URL, so never
#: a route's upstream).
ENVIRONMENT: Final = "environment"

_Key = tuple[int | None, str]


@final
class LaunchBindings:
    """The provisional bindings one launch made or relies on (see the module doc): pass it
    to :meth:`SecretHosts.admit` (``launch=``), then settle it once, with
    :meth:`SecretHosts.confirm` (its program exists) or :meth:`SecretHosts.withdraw` (it was
    refused). Settling one that holds nothing costs nothing."""

    def __init__(self) -> None:
        self.keys: list[_Key] = []
        self.settled = False

    def __repr__(self) -> str:
        return f"<LaunchBindings {len(self.keys)} held, settled={self.settled}>"


@dataclass(eq=False)
class _Provisional:
    """A binding a launch made that no launch has run with yet."""

    origins: tuple[str, ...]
    holders: set[LaunchBindings] = field(default_factory=set)
    ran: bool = False


def secret_key(reference: str) -> str:
    """The one spelling of the secret ``reference`` reads: a keychain entry of nonod's
    service as its account name (``keyring://nono/gh`` and ``gh?decode=go-keyring`` are
    ``gh``), another service's without the query, a file's path with single slashes (a file
    of the daemon's systemd credentials directory as ``systemd-creds://NAME``), a
    1Password reference in lower case (1Password reads them so), without its query (the
    field it reads from) and without its section (the field's name alone reads it); the
    others as written (an
    environment variable's name is case-sensitive). A 1Password item named by its ID in one
    reference and by its name in another stays two (only ``op`` knows they are one). Raises
    BadReference (or UnsupportedSource) for a reference that does not parse."""
    ref = parse_credential_ref(reference)
    if ref.kind == "keychain":
        return ref.account if ref.service == KEYRING_SERVICE else \
            f"keyring://{ref.service}/{ref.account}"
    if ref.kind == "file":
        return _file_key(_SLASHES.sub("/", ref.path))
    if ref.kind == "op":
        # 1Password's references are case-insensitive, and a query reads the same field
        # (``?attribute=value``, an SSH key ``?ssh-format=openssh``; review27): the field is
        # the secret, whatever `op read` derives from it.
        text = ref.text.partition("?")[0].lower()
        parts = text[len("op://"):].split("/")
        if len(parts) == 4:
            # ``op://vault/item/section/field`` is the field ``op://vault/item/field``
            # reads: without a section, 1Password matches the field's name (or ID) among
            # all the item's fields, in any section, and reads nothing when more than one
            # matches (known2). Fields of one name in two sections are then one binding:
            # refused where they go to different hosts (fail closed), never two.
            text = "op://" + "/".join((*parts[:2], parts[3]))
        return text
    return ref.text


def _file_key(path: str) -> str:
    """``file://PATH``, or ``systemd-creds://NAME`` for a file of the daemon's systemd
    credentials directory: what ``systemd-creds://NAME`` reads (review27: a root caller's
    ``file:///run/credentials/nonod.service/NAME`` was another binding of the same secret)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and directory.startswith("/"):
        parent, name = os.path.split(path)
        places = {os.path.normpath(directory), os.path.realpath(directory)}
        if parent in places and _SYSTEMD_NAME.fullmatch(name) and name not in (".", ".."):
            return f"systemd-creds://{name}"
    return "file://" + path


def _real_file(reference: str, identity: Identity | None) -> str:
    """Blocking. ``file://`` and the file's path with its directory links resolved as
    ``identity`` (None: the daemon itself) would resolve them when it opens the file."""
    path = _SLASHES.sub("/", parse_credential_ref(reference).path)
    with acting_as(identity):  # this worker thread only
        return "file://" + os.path.realpath(path)


def real_secret_key(reference: str, identity: Identity | None) -> str:
    """Blocking. :func:`secret_key`, with a file's directory links resolved as ``identity``
    (None: the daemon itself) would resolve them when it opens the file: a link the
    repository ships (``repo/keys -> ~/.secrets``) names the file it leads to. (The file
    itself is never a link: it is opened with O_NOFOLLOW.)"""
    key = secret_key(reference)
    if not reference.startswith("file://"):
        return key
    return _file_key(_real_file(reference, identity).removeprefix("file://"))


def real_references(references: Iterable[str], identity: Identity | None) -> dict[str, str]:
    """Blocking. Each ``file://`` reference among ``references`` with its links resolved
    (as :func:`real_secret_key` binds it). The daemon binds, and then reads, that path,
    with ``SourceOptions.exact_paths``: resolved once, so a link changed between the
    binding and the read refuses the read instead of sending another file than the one
    bound."""
    return {ref: _real_file(ref, identity) for ref in references if ref.startswith("file://")}


def _stored_key(reference: str) -> str:
    """A stored binding's key: its secret's spelling, or the text itself if it no longer
    parses (kept, never dropped: forgetting a binding would let any route bind it anew)."""
    try:
        return secret_key(reference)
    except CredentialError:
        return reference


def trusting(url: str, tls_ca: str | None) -> str:
    """A route's upstream as :func:`origin_of` reads it: with ``(trusting /ca.pem)`` when the
    route trusts a CA of its own (``tls_ca``). Whoever holds that CA's key, and a place on
    the path, reads what the route sends: another upstream than the host with the system's
    CAs, or with another CA. Raises BadReference for a CA path this form cannot carry."""
    if any(c.isspace() for c in url):  # only this form has a space (origin_of)
        raise BadReference(f"`{url[:300]}` is not an http(s) URL (it holds white space)")
    if tls_ca is None:
        return url
    if not tls_ca.startswith("/") or any(c in tls_ca for c in "()") or \
            any(not c.isprintable() for c in tls_ca):
        raise BadReference(f"tls_ca `{tls_ca}`: a route whose secret is bound to its hosts "
                           "needs a CA path without parentheses or unprintable characters")
    return f"{url} (trusting {tls_ca})"


_TRUSTING: Final = re.compile(r"(?P<url>\S+) \(trusting (?P<ca>/[^()]+)\)")


def origin_of(url: str) -> str:
    """``https://host[:port]`` of an upstream URL: lower-case host, the port only when it is
    not the scheme's default; ``https://host (trusting /ca.pem)`` for one that trusts a CA
    of its own (:func:`trusting`); :data:`ENVIRONMENT` as it is. Raises BadReference for
    anything but an http(s) URL with a host, or that word."""
    if url == ENVIRONMENT:
        return url
    if " " in url:
        match = _TRUSTING.fullmatch(url)
        if match is None or not match["ca"].isprintable():
            raise BadReference(f"`{url[:300]}` is not an http(s) URL, nor one with "
                               "`(trusting /path/to/ca.pem)`")
        return f"{origin_of(match['url'])} (trusting {match['ca']})"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadReference(f"`{url}` is not an http(s) URL") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host or len(host) > _MAX_HOST or \
            parts.username is not None or parts.password is not None:
        raise BadReference(f"`{url[:300]}` is not an http(s) URL with a host (of at most "
                           f"{_MAX_HOST} characters)",
                           hint="give the upstream as a route names it: https://api.example.com")
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


@final
class SecretHosts:
    """The upstreams each user's secret references have been sent to. Thread-safe: launches
    call :meth:`admit` from the event loop (it never blocks on the file unless something is
    new), the ``secret hosts`` verb from a worker thread."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / HOSTS_FILE
        self._bound: dict[tuple[int | None, str], list[str]] = {}
        self._loaded = False
        self._lock = threading.Lock()
        #: Bindings made by launches whose program does not exist yet. Guarded by
        #: ``_held_lock`` (never held across I/O: :meth:`confirm` takes it on the event
        #: loop); changed only with ``_lock`` held too, but by :meth:`confirm`.
        self._provisional: dict[_Key, _Provisional] = {}
        self._held_lock = threading.Lock()
        #: A binding saved as pending was confirmed since (``_held_lock``): the file's mark
        #: is to be taken off (:meth:`save_confirmed`).
        self._confirm_due = False

    def admit(self, uid: int | None, routes: Iterable[tuple[str, str, str]], *,
              identity: Identity | None = None, bind: bool = True,
              launch: LaunchBindings | None = None) -> tuple[str, ...]:
        """Blocking (reads the file the first time; writes it when something is new).
        ``routes``: (what sends it, as ``route `github```, credential reference, upstream
        URL). Raises SecretElsewhere
        when a reference is bound and the upstream is not among its hosts; otherwise binds
        the references routed for the first time and returns one line for each
        (``github_token -> https://api.github.com``). Nothing is bound unless every route
        passes. ``identity``: whose rights resolve a file reference's links (the caller's
        on the system daemon; outside the lock: a caller's slow file system must not hold
        other launches). ``bind`` False (a tool's session): a reference bound to nothing
        raises SecretHostsError instead of being bound: its agent's launch bound its tools'
        routes and said so, and a first route made at a call is said to no one, by whatever
        the agent's view held by then (a link it repointed: redteam33). ``launch``: the
        bindings made, and the provisional ones relied on, stay provisional until it is
        settled (:meth:`confirm`, :meth:`withdraw`); None: what is bound is bound for good."""
        keyed = [(name, reference, real_secret_key(reference, identity), origin_of(upstream))
                 for name, reference, upstream in routes]
        with self._lock:
            self._load()
            new: dict[tuple[int | None, str], list[str]] = {}
            relied: set[_Key] = set()
            for name, reference, secret, origin in keyed:
                key = (uid, secret)
                known = self._bound.get(key)
                if known is None and not bind:
                    raise SecretHostsError(
                        f"{name} would send the secret `{reference}` to {origin}, to which "
                        "its agent's launch did not bind it: a tool's session binds no "
                        "secret of its own", hint="launch the agent again: its launch binds "
                        "its tools' routes and says so; a link on a `file://` path that "
                        "changed since then changes the secret")
                if known is None:
                    bound = new.setdefault(key, [])
                    if origin not in bound:
                        bound.append(origin)
                elif origin not in known:
                    spelled = reference if reference == secret else \
                        f"{reference}` (`{secret}"
                    where = ("into the program's environment, from where it goes wherever "
                             "the session's network reaches" if origin == ENVIRONMENT
                             else f"to {origin}")
                    with self._held_lock:
                        provisional = key in self._provisional
                    pending = " (by a launch not started yet: if it is refused, that " \
                        "binding goes)" if provisional else ""
                    raise SecretElsewhere(
                        f"{name} would send the secret `{spelled}` {where}; it "
                        f"has been sent only to {', '.join(known)}{pending}",
                        hint=f"if that host should get it: `nonoctl secret hosts "
                             f"{shlex.quote(secret)} --add {shlex.quote(origin)}`; otherwise, "
                             "do not run this profile")
                else:
                    relied.add(key)
            if not new:
                self._hold(launch, relied, {})
                return ()
            held = sum(1 for owner, _ in self._bound if owner == uid)
            if held + len(new) > MAX_REFERENCES:
                raise SecretHostsError(f"more than {MAX_REFERENCES} secret references are bound "
                                   "for this user", hint="`nonoctl secret hosts NAME --clear` "
                                   "forgets the bindings of a reference no longer used")
            self._within_share(uid, new)
            with self._held_lock:
                held_by_launch = launch is not None and not launch.settled
            self._save(new, pending=new.keys() if held_by_launch else ())
            self._hold(launch, relied, new)
            return tuple(f"{ref} -> {', '.join(origins)}" for (_, ref), origins in new.items())

    def _hold(self, launch: LaunchBindings | None, relied: set[_Key],
              new: dict[_Key, list[str]]) -> None:
        """(``_lock`` held.) ``launch`` holds the bindings it made and the provisional ones
        it relies on."""
        if launch is None:
            return
        with self._held_lock:
            if launch.settled:  # its end came first: what it bound stays, as for one that ran
                self._confirm_due = self._confirm_due or bool(new)  # saved as pending
                return
            for key in relied:
                provisional = self._provisional.get(key)
                if provisional is not None and launch not in provisional.holders:
                    provisional.holders.add(launch)
                    launch.keys.append(key)
            for key, origins in new.items():
                self._provisional[key] = _Provisional(tuple(origins), {launch})
                launch.keys.append(key)

    def confirm(self, launch: LaunchBindings) -> None:
        """``launch``'s program exists: the bindings it holds are kept for good. No I/O
        (they are saved already); never waits on a save in progress."""
        if not launch.keys:
            launch.settled = True
            return
        with self._held_lock:
            if launch.settled:
                return
            launch.settled = True
            for key in launch.keys:
                provisional = self._provisional.get(key)
                if provisional is None or launch not in provisional.holders:
                    continue
                provisional.ran = True
                self._confirm_due = True
                provisional.holders.discard(launch)
                if not provisional.holders:
                    del self._provisional[key]

    @property
    def confirm_due(self) -> bool:
        """A confirmed binding is still marked pending in the file (:meth:`save_confirmed`
        takes the mark off)."""
        return self._confirm_due

    def save_confirmed(self) -> None:
        """Blocking. Take the pending mark off the bindings confirmed since they were saved
        (a launch's that ran): a daemon killed later must not withdraw them. Never raises: a
        write that fails is logged, and retried at the next confirmation or save."""
        with self._lock:
            with self._held_lock:
                due, self._confirm_due = self._confirm_due, False
            if not due:
                return
            try:
                self._write()
            except OSError as exc:
                with self._held_lock:
                    self._confirm_due = True
                log.error("confirmed secret bindings could not be saved; a daemon killed "
                          "before the next save withdraws them", path=str(self._path),
                          error=exc.strerror or str(exc))

    def withdraw(self, launch: LaunchBindings) -> tuple[str, ...]:
        """Blocking (writes the file when something is undone). ``launch`` was refused: the
        bindings it made that no launch ran with, and none relies on any more, are undone
        (unless changed since: ``--add`` and ``--clear`` settle a binding). Returns the
        references unbound. Never raises: a binding that cannot be undone stays (logged),
        as a binding of a launch that ran would."""
        if not launch.keys:
            launch.settled = True
            return ()
        with self._lock:
            with self._held_lock:
                if launch.settled:
                    return ()
                launch.settled = True
                undo: list[_Key] = []
                for key in launch.keys:
                    provisional = self._provisional.get(key)
                    if provisional is None or launch not in provisional.holders:
                        continue
                    provisional.holders.discard(launch)
                    if provisional.holders:
                        continue
                    del self._provisional[key]
                    if not provisional.ran and \
                            tuple(self._bound.get(key, ())) == provisional.origins:
                        undo.append(key)
            if not undo:
                return ()
            try:
                self._save({}, forget=undo)
            except SecretHostsError as exc:
                log.error("a refused launch's secret bindings could not be undone; they stay",
                          error=exc.message)
                return ()
            return tuple(ref for _, ref in undo)

    def hosts(self, uid: int | None, reference: str) -> tuple[str, ...]:
        """Blocking. The upstreams ``reference`` is bound to (none: it was never routed)."""
        key = (uid, secret_key(reference))
        with self._lock:
            self._load()
            return tuple(self._bound.get(key, ()))

    def add(self, uid: int | None, reference: str, urls: Iterable[str]) -> tuple[str, ...]:
        """Blocking. Bind ``reference`` to these upstreams too; returns its hosts."""
        secret = secret_key(reference)
        origins = [origin_of(url) for url in urls]
        with self._lock:
            self._load()
            key = (uid, secret)
            bound = list(self._bound.get(key, ()))
            for origin in origins:
                if origin not in bound:
                    bound.append(origin)
            if len(bound) > MAX_ORIGINS:
                raise SecretHostsError(f"`{reference}` would be bound to more than {MAX_ORIGINS} "
                                   "upstreams")
            if key not in self._bound and \
                    sum(1 for owner, _ in self._bound if owner == uid) >= MAX_REFERENCES:
                raise SecretHostsError(f"more than {MAX_REFERENCES} secret references are bound "
                                   "for this user")
            settled = self._settled_by_user(key)
            if bound != self._bound.get(key):
                self._within_share(uid, {key: bound})
                self._save({key: bound})
            elif settled:  # as it was, now the user's word: no longer pending in the file
                self._save({})
            return tuple(bound)

    def clear(self, uid: int | None, reference: str) -> None:
        """Blocking. Forget where ``reference`` went: its next route binds it again."""
        key = (uid, secret_key(reference))
        with self._lock:
            self._load()
            if key in self._bound:
                self._save({}, forget=[key])
            self._settled_by_user(key)

    def _settled_by_user(self, key: _Key) -> bool:
        """(``_lock`` held.) The user said where ``key`` goes: no launch's refusal undoes
        it. True if it was pending."""
        with self._held_lock:
            return self._provisional.pop(key, None) is not None

    def _within_share(self, uid: int | None,
                      changes: dict[tuple[int | None, str], list[str]]) -> None:
        """Raise SecretHostsError if ``uid``'s bindings with ``changes`` would take more than
        MAX_USER_BYTES of the file."""
        merged = {k: v for k, v in self._bound.items() if k[0] == uid} | changes
        size = sum(64 + len(ref.encode()) + sum(len(o.encode()) + 4 for o in origins)
                   for (_, ref), origins in merged.items())
        if size > MAX_USER_BYTES:
            raise SecretHostsError(f"the secret hosts of this user would take more than "
                                   f"{MAX_USER_BYTES // 1024} KiB",
                                   hint="`nonoctl secret hosts NAME --clear` forgets the "
                                   "bindings of a reference no longer used")

    def _load(self) -> None:
        if self._loaded:
            return
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            self._loaded = True
            return
        try:
            with os.fdopen(fd, "rb") as f:
                data = json.loads(f.read(_MAX_FILE + 1))
        except (OSError, ValueError) as exc:
            # Starting afresh would let the next launch bind every secret anew: refuse until
            # the operator looks (the error names the file).
            raise SecretHostsError(f"cannot read {self._path}: {exc}", hint="restore or remove "
                               "the file; removing it forgets where every secret went") from None
        if not isinstance(data, dict) or data.get("version") != 1 or \
                not isinstance(data.get("bindings"), list):
            raise SecretHostsError(f"{self._path} is not a secret-hosts file (version 1)")
        withdrawn: list[str] = []
        for entry in data["bindings"]:
            uid, ref, origins, pending = (
                entry.get("uid"), entry.get("reference"), entry.get("origins"),
                entry.get("pending", False)) if isinstance(entry, dict) else (0, 0, 0, 0)
            if not (uid is None or isinstance(uid, int)) or not isinstance(ref, str) or \
                    not isinstance(origins, list) or \
                    not all(isinstance(o, str) for o in origins) or \
                    not isinstance(pending, bool):
                raise SecretHostsError(f"{self._path} holds a malformed binding")
            if pending:
                # A launch's, not settled when its daemon stopped: no program ran with it
                # (its confirmation takes the mark off), so it goes, as its refusal's would.
                withdrawn.append(ref)
                continue
            # One secret written under two spellings (before review23): keep every host.
            merged = self._bound.setdefault((uid, _stored_key(ref)), [])
            merged.extend(o for o in origins if o not in merged)
        self._loaded = True
        if withdrawn:
            log.warning("withdrew the secret bindings of launches not settled when the "
                        "daemon stopped", references=len(withdrawn))
            try:
                self._write()
            except OSError as exc:  # still marked: the next start withdraws them again
                log.error("cannot save the withdrawn secret bindings", path=str(self._path),
                          error=exc.strerror or str(exc))

    def _save(self, changes: dict[tuple[int | None, str], list[str]], *,
              forget: Iterable[_Key] = (), pending: Iterable[_Key] = ()) -> None:
        """Apply ``changes`` (and forget the keys ``forget``), and replace the file, durably.
        A failure refuses what asked and changes nothing: what the daemon holds is what the
        file says (an --add or --clear said to have failed must not hold until a restart,
        and a binding that was never saved must not let the next launch through
        unrecorded). ``pending``: keys of ``changes`` a launch binds provisionally (the
        file marks them, as it marks those already held so)."""
        before = dict(self._bound)
        self._bound.update(changes)
        for key in forget:
            del self._bound[key]
        try:
            self._write(pending)
        except OSError as exc:
            self._bound = before
            raise SecretHostsError(f"cannot save where secrets were sent ({self._path}): "
                                   f"{exc.strerror or exc}") from None

    def _write(self, pending: Iterable[_Key] = ()) -> None:
        """(``_lock`` held.) Replace the file with what is bound, durably; a binding no
        launch ran with yet marked ``"pending": true``."""
        with self._held_lock:
            marked = {key for key, held in self._provisional.items() if not held.ran}
        marked.update(pending)
        entries: list[dict[str, object]] = []
        for (uid, ref), origins in sorted(self._bound.items(),
                                          key=lambda item: (item[0][0] or -1, item[0][1])):
            entry: dict[str, object] = {"uid": uid, "reference": ref, "origins": origins}
            if (uid, ref) in marked:
                entry["pending"] = True
            entries.append(entry)
        tmp = self._path.with_name(HOSTS_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "bindings": entries}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        dirfd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        log.info("secret hosts saved", references=len(entries))
