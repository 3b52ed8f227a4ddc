"""Running a program under observation: the recording session, strace inside it, the
recording proxy beside it, the time limit, and the fold at the end."""

from __future__ import annotations

import functools
import itertools
import math
import os
import secrets
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final, final

import msgspec
import trio

from ..errors import NonoError
from ..policy import Access, Denial, EnvPolicy, Grant, NetworkPolicy, ResolvedPolicy
from ..profiles import CliOverrides, Profile, ResolveContext, parse_profile, resolve
from ..proxy import Resolver, child_environment
from ..sandbox import ExitStatus, Launcher, LaunchRequest, Sandboxed, open_launcher
from ..sandbox._mounts import carried
from ._fold import Coverage, fold
from ._network import NetworkRecorder, forward_listen_port, serve_recording_proxy
from ._propose import LearnProgress, LearnResult, listening_ports
from ._strace import StraceParser, strace_argv
from ._trace import Observations, TraceRecorder, Use

#: Where strace is looked for (Debian's package installs /usr/bin/strace).
STRACE_PATHS: Final = ("/usr/bin/strace", "/bin/strace", "/usr/local/bin/strace")
#: Seconds between SIGTERM and SIGKILL when the time limit ends a run.
GRACE: Final = 5.0
#: Seconds to wait for the session to end after SIGKILL.
KILL_TIMEOUT: Final = 10.0
#: Seconds from the launch for strace to start tracing the program (its first traced call);
#: the time limit counts from then, so that a loaded machine's slow start does not use it up.
START_TIMEOUT: Final = 60.0
#: How often the trace is looked at for its first line until the program is traced.
START_POLL: Final = 0.02
#: How often the trace is read and progress reported.
PROGRESS_INTERVAL: Final = 0.5
#: Trees of the operating system the recording session sees read-only; writes there are
#: refused (and reported), everything else is read-write.
READ_ONLY_TREES: Final = ("/usr", "/etc", "/boot", "/sys", "/run", "/snap", "/bin", "/sbin",
                          "/lib", "/lib32", "/lib64", "/libx32", "/nix")
#: Host state outside those trees that code is later run from, outside any sandbox and often
#: as root: package managers' databases and maintainer scripts, job spools (cron, at),
#: cloud-init's per-boot scripts, polkit's local rules, container images and sandboxed apps,
#: add-on software. Seen read-only as well: a learn run as root wrote
#: ``/var/lib/dpkg/info/*.postinst``, which the next ``apt`` runs as root.
RUNS_LATER: Final = ("/opt", "/var/spool", "/var/lib/dpkg", "/var/lib/apt", "/var/lib/rpm",
                     "/var/lib/dnf", "/var/lib/pacman", "/var/lib/ucf", "/var/lib/dkms",
                     "/var/lib/cloud", "/var/lib/polkit-1", "/var/lib/systemd",
                     "/var/lib/snapd", "/var/lib/flatpak", "/var/lib/docker",
                     "/var/lib/containers", "/var/lib/sudo")
#: Each session gets its own empty instance of these (see docs/profiles.md).
#: Trees of the operating system's looked through for links out of them too: what is run
#: from ``/usr/local`` comes first in ``PATH``, and ``/etc`` names what services run. (The
#: rest of the read-only trees are too big to walk at each learn run.)
LINKED_SYSTEM_TREES: Final = ("/usr/local", "/etc")
#: Entries looked at below each of those trees (and each other account's home, for a root
#: caller) for symbolic links out of them (:func:`link_targets`).
LINK_SCAN_LIMIT: Final = 5_000
#: Entries past which a directory holding a tree seen read-only is granted read-only whole,
#: not entry by entry (:func:`_whole_tree`).
SPLIT_LIMIT: Final = 1_000
_PRIVATE: Final = ("/tmp", "/var/tmp", "/dev/shm")
#: Provided fresh by the sandbox; never bound from the host.
_PROVIDED: Final = ("/proc", "/dev")
_CHUNK: Final = 1 << 20  # bytes of trace read at a time
_MAX_LINE: Final = 1 << 20  # a longer trace line is not strace's: dropped
_GRANTING: Final = Use.READ | Use.WRITE | Use.EXEC | Use.LIST | Use.CREATE | Use.REMOVE

# The session's program: strace runs as its child. A stop signal from the daemon (forwarded
# by the session's init) is passed to every process of the session, so the traced program
# shuts down as it would on its own, and strace (which blocks fatal signals, -I never) records
# its shutdown. Standard input is handed on explicitly: an asynchronous list would get
# /dev/null. The shell's own messages ("Terminated") are not the program's and are dropped.
# The script is a constant; the traced command is passed as arguments.
SHIM: Final = """\
trap 'kill -s TERM -- -1 2>/dev/null' TERM
trap 'kill -s INT -- -1 2>/dev/null' INT
trap 'kill -s HUP -- -1 2>/dev/null' HUP
exec 3<&0
"$@" <&3 3<&- &
child=$!
exec 3<&- 2>/dev/null
while :; do
  wait "$child"
  status=$?
  kill -s 0 "$child" 2>/dev/null || exit "$status"
done
"""
SHELL: Final = "/bin/sh"


class LearnError(NonoError):
    """A learn run could not observe the program."""

    code = "learn.failed"


def find_strace() -> str:
    for path in STRACE_PATHS:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("strace")
    if found is None:
        raise LearnError("strace is not installed: learn traces the program with it",
                         hint="install it (apt-get install strace)")
    return found


def _under(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def others_homes(uid: int, home: str) -> tuple[str, ...]:
    """For a root caller (``uid`` 0), the home directories of the host's other accounts
    (users and services, ``/etc/passwd``): root may write them all, and what a user's start-up
    files or a service's state hold runs later as that user. Empty for anyone else, whom file
    permissions keep out of them."""
    if uid != 0:
        return ()
    import pwd  # only a root caller needs the account list

    mine = os.path.realpath(home)
    homes = set()
    for account in pwd.getpwall():
        path = os.path.realpath(account.pw_dir) if account.pw_dir else "/"
        if (path not in ("/", mine) and os.path.isdir(path)
                and not any(_under(path, tree) for tree in (*READ_ONLY_TREES, *_PRIVATE))):
            homes.add(path)
    return tuple(sorted(homes))


def link_targets(trees: Sequence[str], *, own: Sequence[str] = (),
                 limit: int = LINK_SCAN_LIMIT) -> tuple[str, ...]:
    """Where the symbolic links at and below ``trees`` (seen read-only while learning) lead,
    where that is outside every tree seen read-only: the kernel follows a link in a
    read-only tree (``/opt/app -> /srv/app``) to its target, which the whole tree's grants
    would leave writable, and what the program writes there is run later under the link's
    name. What a target holds is looked at too. Each tree breadth first, shallow links
    before deep ones, at most ``limit`` entries below it (a deeper link past them stays
    writable; one user's home full of entries uses up its own share only). Targets in
    ``own`` (the working directory, the trace directory: the program's by the caller's
    choice), in the sandbox's own trees or the private temporary ones are left out."""
    found: list[str] = []

    def outside(real: str) -> bool:
        return not any(_under(real, tree) for tree in (
            *READ_ONLY_TREES, *trees, *found, *_PRIVATE, *_PROVIDED)) and not any(
            _under(real, mine) for mine in own)

    for tree in trees:
        queue = deque([tree])
        real = os.path.realpath(tree)  # a tree that is itself a link, or has one on its way
        if real != tree and outside(real):
            found.append(real)
            queue.append(real)
        looked = 0
        while queue and looked < limit:
            directory = queue.popleft()
            try:
                with os.scandir(directory) as entries:
                    listed = list(itertools.islice(entries, limit - looked))
            except OSError:
                continue
            looked += len(listed)
            for entry in listed:
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if outside(real):
                        found.append(real)
                        queue.append(real)
                elif entry.is_dir(follow_symlinks=False):
                    queue.append(entry.path)
    return tuple(found)


def _crowded(directory: str) -> bool:
    """Whether ``directory`` holds more than :data:`SPLIT_LIMIT` entries."""
    try:
        with os.scandir(directory) as entries:
            return sum(1 for _ in itertools.islice(entries, SPLIT_LIMIT + 1)) > SPLIT_LIMIT
    except OSError:
        return False


def _whole_tree(root: str = "/", kept: tuple[str, ...] = RUNS_LATER) -> list[Grant]:
    """Grants for everything below ``root`` except what the sandbox provides itself.

    A grant of ``/`` itself cannot be mounted by the engine, so the top-level entries are
    granted one by one; a directory that holds one of the private temporary directories
    (``/var`` holds ``/var/tmp``) or one of :data:`RUNS_LATER` (``/var/lib`` holds
    ``/var/lib/dpkg``) is granted entry by entry too, so that the private directory is not
    hidden under a bind of its parent and the other is read-only. ``kept``: the trees seen
    read-only (:data:`RUNS_LATER`, other accounts' homes for a root caller, and where the
    links in those lead, :func:`link_targets`). A directory of more than
    :data:`SPLIT_LIMIT` entries on the way to one is granted read-only as a whole instead
    (the safe side: its entries one by one could be a grant each of a million). Symlinks
    are left to the engine, which recreates those on the way to what it binds.
    """
    grants: list[Grant] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return grants
    for name in names:
        path = os.path.join(root, name)
        if path in _PRIVATE or path in _PROVIDED or os.path.islink(path) or not carried(path):
            continue  # (a name that is not UTF-8 cannot be in a plan: left out, not granted)
        if any(_under(inner, path) and inner != path for inner in (*_PRIVATE, *kept)) \
                and not any(_under(path, tree) for tree in READ_ONLY_TREES):
            if _crowded(path) and not any(_under(p, path) for p in _PRIVATE):
                # (a link's target deep in a directory of thousands: one grant, read-only)
                grants.append(Grant(path=path, access=Access.READ, source="learn"))
            else:
                grants.extend(_whole_tree(path, kept))
            continue
        read_only = any(_under(path, tree) for tree in (*READ_ONLY_TREES, *kept))
        access = Access.READ if read_only else Access.READWRITE
        if os.path.isdir(path):
            grants.append(Grant(path=path, access=access, source="learn"))
        elif os.path.isfile(path):
            grants.append(Grant(path=path, access=Access.READ, is_file=True, source="learn"))
    return grants


def _outermost(denials: Sequence[Denial]) -> tuple[Denial, ...]:
    """Denials not inside another denial (the outer mask already hides the inner path)."""
    paths = [d.path for d in denials]
    out: dict[str, Denial] = {}
    for denial in denials:
        if not any(p != denial.path and _under(denial.path, p) for p in paths):
            out.setdefault(denial.path, denial)
    return tuple(sorted(out.values(), key=lambda d: d.path))


def _profile(data: dict[str, object]) -> Profile:
    return parse_profile(msgspec.json.encode({"meta": {"name": "learn"}, **data}), "learn")


def recording_policy(
    ctx: ResolveContext,
    *,
    trace_dir: str,
    hide: Sequence[str] = (),
    env: EnvPolicy = EnvPolicy(),  # noqa: B008 - frozen, immutable
) -> ResolvedPolicy:
    """The policy a learn run's program runs under.

    Every path is visible and, outside the operating system's trees, writable, except what
    no session may ever see: the always-on deny groups (``~/.ssh``, keychains, shell history,
    nono's own state...) and ``hide`` (the daemon's files). ``/tmp``, ``/var/tmp`` and
    ``/dev/shm`` are private, as in every session. The network is restricted: the only way
    out is the session's proxy, which the learn run serves with a recording policy.
    """
    # The working directory named as well: the whole host is visible here anyway, so a
    # learn run from $HOME or / is not the broad grant resolution refuses.
    # A root caller's: read-only, and named to resolution so that the always-on deny groups
    # are placed in them too (another user's ~/.ssh was readable to a root learn run).
    homes = others_homes(ctx.uid, ctx.home)
    base = resolve(_profile({"workdir": {"access": "readwrite"}}), ctx,
                   overrides=CliOverrides(allow=(ctx.workdir,), read=homes))
    grants = [g for g in base.grants if not any(_under(g.path, p) for p in _PROVIDED)]
    trace_real = os.path.realpath(trace_dir)
    kept = (*RUNS_LATER, *homes)
    grants.extend(_whole_tree(kept=(*kept, *link_targets(
        (*kept, *LINKED_SYSTEM_TREES), own=(os.path.realpath(ctx.workdir), trace_real)))))
    grants.append(Grant(path="/var/tmp", access=Access.READWRITE, source="learn"))
    grants.append(Grant(path=trace_real, access=Access.READWRITE, source="learn"))
    hidden = [Denial(path=os.path.realpath(p), is_file=os.path.isfile(p), source="daemon")
              for p in hide]
    return ResolvedPolicy(
        name="learn",
        grants=tuple(grants),
        denials=_outermost([*base.denials, *hidden]),
        workdir=base.workdir,
        workdir_access=Access.READWRITE,
        env=env,
        network=NetworkPolicy(restricted=True),
        groups=base.groups,
        notes=base.notes,
        # The whole tree is writable here: the walk for hard-linked files (``_linkscan``)
        # cannot cover it within its bound; what it found by then is still bound read-only.
        allow_degraded=("linked_files",),
        denial_links=base.denial_links,  # in the whole tree's writable grants: kept in place
        # What the resolution found of the caller's home and environment, for the view's
        # protections as in any session: the home, the caches (copy-on-write) and start-up
        # files (read-only) the caller's variables moved.
        home=base.home,
        cache_home=base.cache_home,
        cache_links=base.cache_links,
        cache_dirs=base.cache_dirs,
        xdg_homes=base.xdg_homes,
        protected_files=base.protected_files,
        git_configs=base.git_configs,
    )


@final
class _TraceFollower:
    """Reads the trace as strace appends to it and feeds the parser (sync: call it in a
    worker thread).

    The file is created (and held open) here before strace starts, and strace's ``-o``
    opens that same file: the traced program, which may write the trace directory, can
    remove or replace the name (a link to ``/dev/zero``, a FIFO) but not what is read. A
    line longer than ``_MAX_LINE`` (strace's are a few KiB; the program can write into the
    file too) is dropped, so memory stays bounded.
    """

    def __init__(self, path: str, cwd: str, *, uid: int | None = None,
                 gid: int | None = None) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o600)
        if uid is not None:
            os.fchown(self._fd, uid, -1 if gid is None else gid)
        self._offset = 0
        self._partial = b""
        self._dropping = False
        self.parser = StraceParser()
        self.recorder = TraceRecorder(cwd)

    def traced(self) -> bool:
        """Whether strace has written anything yet (cheap: no read, no parse)."""
        return self._fd >= 0 and os.fstat(self._fd).st_size > 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def poll(self) -> None:
        while data := os.pread(self._fd, _CHUNK, self._offset):
            self._offset += len(data)
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()
            if self._dropping and lines:  # the end of an overlong line
                lines.pop(0)
                self._dropping = False
            for line in lines:
                self._feed(line)
            if len(self._partial) > _MAX_LINE:
                self._partial, self._dropping = b"", True
                self.parser.skipped += 1

    def finish(self) -> Observations:
        self.poll()
        self.close()
        if self._partial and not self._dropping:
            self._feed(self._partial)
            self._partial = b""
        return self.recorder.finish()

    def _feed(self, raw: bytes) -> None:
        call = self.parser.feed(raw.decode("utf-8", "surrogateescape"))
        if call is not None:
            self.recorder.feed(call)

    def path_count(self) -> int:
        return sum(1 for r in self.recorder.observations.paths.values() if r.ok & _GRANTING)


@asynccontextmanager
async def _engine(launcher: Launcher | None) -> AsyncIterator[Launcher]:
    if launcher is not None:
        yield launcher
        return
    async with open_launcher() as own:
        yield own


async def _watch(proc: Sandboxed, box: list[ExitStatus], exited: trio.Event) -> None:
    # Shielded: Sandboxed.wait_exited must not be cancelled halfway (it owns the exit pipe),
    # and the stop sequence below relies on it to learn that the session is over.
    with trio.CancelScope(shield=True):
        box.append(await proc.wait_exited())
    exited.set()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _stop(proc: Sandboxed, exited: trio.Event, grace: float) -> None:
    """SIGTERM (the shim passes it to every process of the session), the grace period,
    SIGKILL (the session's init, and with it the whole session), then wait, bounded."""
    proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(grace):
        await exited.wait()
    if not exited.is_set():
        proc.kill()
        with trio.move_on_after(KILL_TIMEOUT):
            await exited.wait()


async def learn(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout: float | None,
    base_profile: Profile | None,
    listen_ports: Sequence[int] = (),
    progress: Callable[[LearnProgress], None] | None = None,
    resolver: Resolver | None = None,
    launcher: Launcher | None = None,
    stdio: tuple[int, int, int] = (0, 1, 2),
    hide: Sequence[str] = (),
    grace: float = GRACE,
    strace: str | None = None,
    stop: trio.Event | None = None,
    uid: int | None = None,
    gid: int | None = None,
    start_timeout: float = START_TIMEOUT,
) -> LearnResult:
    """Run ``argv`` in ``cwd`` under observation and propose a profile for it.

    ``env`` is the caller's environment (``HOME``, ``XDG_*`` and ``TMPDIR`` locate the user's
    directories; the program gets what the base profile's environment rules pass, by default the
    basic variables only, plus the proxy variables). ``timeout`` ends the run that many seconds
    after strace has started tracing the program (its first traced call, not the launch: a slow
    start on a loaded machine does not use up the program's time): SIGTERM to every process of
    the session, ``grace`` seconds, then SIGKILL; the result is returned either way.
    ``start_timeout`` bounds the start itself: a program not traced that many seconds after the
    launch is stopped the same way and the run fails. ``base_profile`` reduces the result to
    what that profile lacks. ``listen_ports`` are forwarded from the host into the session while
    it runs, and proposed. ``progress`` is called about twice a second (it must not block).
    ``resolver`` resolves the names the program asks for (tests pin names to local fakes);
    ``launcher`` is the daemon's fork server (one is started otherwise); ``hide`` are paths the
    session must not see besides the deny groups (the daemon's state, configuration and socket).
    Setting ``stop`` ends the run early, as the time limit would (the user is done exercising
    the program). ``uid``/``gid`` run the program as another user (a system daemon, as root, for
    the requesting client); the default is the caller's own.

    Raises LearnError when the program could not be traced (or not within
    ``start_timeout``), and what ``resolve`` and the engine raise for a base profile that
    does not resolve or a launch that is refused.
    """
    if not argv:
        raise LearnError("no command to learn")
    if timeout is not None and not timeout > 0:
        raise LearnError(f"the time limit must be positive, got {timeout}")
    if not start_timeout > 0:
        raise LearnError(f"the start time limit must be positive, got {start_timeout}")
    for port in listen_ports:
        if not 1 <= port <= 65535:
            raise LearnError(f"listen port {port} is out of range (1-65535)")
    strace_path = strace or find_strace()
    home = env.get("HOME") or os.path.expanduser("~")
    ctx = ResolveContext.for_user(home=home, workdir=os.path.realpath(cwd),
                                  uid=os.getuid() if uid is None else uid, environ=env)
    coverage = await trio.to_thread.run_sync(Coverage.build, ctx)
    base_policy = resolve(base_profile, ctx) if base_profile is not None else None
    trace_dir = await trio.to_thread.run_sync(
        functools.partial(tempfile.mkdtemp, prefix="nono-learn-"))
    try:
        if uid is not None:
            os.chown(trace_dir, uid, -1 if gid is None else gid)
        return await _learn_in(
            argv, ctx=ctx, env=env, timeout=timeout, base_policy=base_policy,
            coverage=coverage, trace_dir=trace_dir, strace_path=strace_path,
            listen_ports=listen_ports, progress=progress, resolver=resolver or Resolver(),
            launcher=launcher, stdio=stdio, hide=hide, grace=grace, stop=stop, uid=uid,
            gid=gid, start_timeout=start_timeout)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(
                functools.partial(shutil.rmtree, trace_dir, ignore_errors=True))


async def _learn_in(
    argv: Sequence[str],
    *,
    ctx: ResolveContext,
    env: Mapping[str, str],
    timeout: float | None,
    base_policy: ResolvedPolicy | None,
    coverage: Coverage,
    trace_dir: str,
    strace_path: str,
    listen_ports: Sequence[int],
    progress: Callable[[LearnProgress], None] | None,
    resolver: Resolver,
    launcher: Launcher | None,
    stdio: tuple[int, int, int],
    hide: Sequence[str],
    grace: float,
    stop: trio.Event | None,
    uid: int | None,
    gid: int | None,
    start_timeout: float,
) -> LearnResult:
    trace_path = os.path.join(trace_dir, "trace")
    policy = recording_policy(ctx, trace_dir=trace_dir, hide=hide,
                              env=base_policy.env if base_policy is not None else EnvPolicy())
    real_trace_dir = os.path.realpath(trace_dir)
    if any(_under(real_trace_dir, d.path) for d in policy.denials):
        raise LearnError(f"the trace directory {real_trace_dir} lies in a path sessions may "
                         "not see", hint="point TMPDIR (of the daemon) somewhere else, "
                         "such as /tmp")
    token = secrets.token_hex(32)
    port = 20000 + secrets.randbelow(40000)
    request = LaunchRequest(
        argv=(SHELL, "-c", SHIM, "nono-learn", *strace_argv(strace_path, trace_path, argv)),
        cwd=ctx.workdir,
        env=tuple(env.items()),
        extra_env=child_environment(port, token),
        proxy_port=port,
        uid=uid,
        gid=gid,
        allow_ptrace=True,
    )
    recorder = NetworkRecorder()
    follower = _TraceFollower(trace_path, ctx.workdir, uid=uid, gid=gid)
    started = trio.current_time()
    traced_at: float | None = None  # when the first traced call was seen
    # The run's end: the start's bound until the program is traced, then the time limit.
    waiting = trio.CancelScope()
    exited = trio.Event()
    box: list[ExitStatus] = []
    timed_out = stopped = False
    failure: LearnError | None = None

    def note_traced() -> bool:
        """Whether the program is traced now; the time limit starts counting the first
        time it is. strace writes the trace line by line, and its first line is the
        program's first traced call (the program can write into the trace only once it
        runs, traced)."""
        nonlocal traced_at
        if traced_at is None and follower.traced():
            traced_at = trio.current_time()
            waiting.deadline = math.inf if timeout is None else traced_at + timeout
        return traced_at is not None

    async def wait_traced() -> None:
        while not note_traced():
            await trio.sleep(START_POLL)

    async def report() -> None:
        while True:
            await trio.to_thread.run_sync(follower.poll)
            if progress is not None:
                now = trio.current_time()
                progress(LearnProgress(
                    elapsed=0.0 if traced_at is None else now - traced_at,
                    remaining=(None if timeout is None else timeout if traced_at is None
                               else max(0.0, traced_at + timeout - now)),
                    paths=follower.path_count(), hosts=recorder.host_count,
                    listening=len(follower.recorder.observations.listening)))
            await trio.sleep(PROGRESS_INTERVAL)

    try:
        async with _engine(launcher) as engine:
            proc = await engine.launch(policy, request, stdio=stdio)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch, proc, box, exited)
                try:
                    if proc.proxy_listener is not None:
                        listener = trio.SocketListener(
                            trio.socket.from_stdlib_socket(proc.proxy_listener))
                        await nursery.start(functools.partial(
                            serve_recording_proxy, listener, recorder=recorder,
                            resolver=resolver, proxy_token=token))
                    for listen in listen_ports:
                        try:
                            await nursery.start(forward_listen_port, proc, listen)
                        except OSError as exc:
                            # Raised after the nursery, so that it is not wrapped in a group.
                            failure = LearnError(
                                f"cannot forward port {listen}: 127.0.0.1:{listen} is not free "
                                f"on this host ({exc.strerror or exc})")
                            failure.__cause__ = exc
                            break
                    else:
                        waiting.deadline = trio.current_time() + start_timeout
                        nursery.start_soon(wait_traced)
                        nursery.start_soon(report)
                        if stop is not None:
                            nursery.start_soon(_cancel_on, stop, waiting)
                        with waiting:
                            await exited.wait()
                        if not exited.is_set():
                            stopped = stop is not None and stop.is_set()
                            if not stopped and not note_traced():
                                failure = LearnError(
                                    f"strace did not start tracing the program within "
                                    f"{start_timeout:g} s of the launch; the session was "
                                    "stopped",
                                    hint="the machine may be overloaded (try again), or "
                                         "strace is stuck: its own message is on the "
                                         "program's standard error")
                            timed_out = not stopped and failure is None
                finally:
                    if not exited.is_set():
                        with trio.CancelScope(shield=True):
                            await _stop(proc, exited, grace)
                    nursery.cancel_scope.cancel()
    except BaseException:
        follower.close()
        raise
    if failure is not None:
        follower.close()
        raise failure
    duration = trio.current_time() - (started if traced_at is None else traced_at)
    observations = await trio.to_thread.run_sync(follower.finish)
    if observations.calls == 0:
        raise LearnError(
            "strace recorded nothing: the program could not be traced",
            hint="strace's own message is on the program's standard error; learn needs "
                 "ptrace inside the session (kernel.yama.ptrace_scope 3 forbids it)")
    for (address, dport), count in observations.direct.items():
        recorder.note_direct(address, dport, count)
    folded = await trio.to_thread.run_sync(functools.partial(
        fold, observations, coverage, ignore=(trace_dir,),
        hidden=[d for d in policy.denials if d.source == "daemon"], recording=policy.grants))
    status = box[0] if box else ExitStatus(signal=signal.SIGKILL)
    notes: list[str] = []
    if follower.parser.skipped:
        notes.append(f"{follower.parser.skipped} trace lines could not be read")
    if observations.unresolved:
        notes.append(f"{observations.unresolved} relative paths had no known base directory")
    for host, hport, reason in recorder.upstream_failures():
        notes.append(f"{host}:{hport} could not be reached while learning ({reason}); "
                     "it is proposed all the same")
    result = LearnResult(
        command=tuple(argv),
        workdir=ctx.workdir,
        home=os.path.realpath(ctx.home),
        workdir_access=folded.workdir_access,
        groups=folded.groups,
        grants=folded.grants,
        outbound=recorder.outbound(),
        listening=listening_ports(observations.listening, listen_ports),
        covered=folded.covered,
        denied_touched=folded.denied_touched,
        skipped=folded.skipped,
        addresses=recorder.addresses(),
        refused=recorder.refused(),
        exit_code=status.code,
        exit_signal=status.signal,
        timed_out=timed_out,
        stopped=stopped,
        duration=duration,
        notes=tuple(notes),
    )
    if base_policy is not None:
        result = result.diff_against(base_policy)
    return result
