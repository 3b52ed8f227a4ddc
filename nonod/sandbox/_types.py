"""Values that cross the sandbox package's public face: requests, reports, exit statuses."""

from __future__ import annotations

import msgspec

from ..cgroups._types import CgroupLimits


class LayerReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one enforcement layer did: ``applied``, ``partial`` or ``unavailable`` (and why)."""

    name: str
    state: str  # applied | partial | unavailable | off
    reason: str = ""
    detail: str = ""


class EnforcementReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every layer of one launch. ``fully_enforced`` is True when no layer is missing.

    A layer's state is ``applied``, ``partial`` (something missing, ``reason`` says what),
    ``unavailable`` (could not be applied) or ``off`` (the policy does not ask for it, such as
    an unrestricted network).

    The engine's own result, in memory only. The daemon turns it into the audit record
    (``nonod.audit.Enforcement``, fixed by the audit format) and the wire value
    (``nonod.protocol.Enforcement``, sent to clients); neither is imported here, since the
    sandbox library imports neither the daemon nor its formats.
    """

    layers: tuple[LayerReport, ...]
    landlock_abi: int = 0

    @property
    def fully_enforced(self) -> bool:
        return all(layer.state in ("applied", "off") for layer in self.layers)

    def summary(self) -> str:
        weak = [f"{lay.name}: {lay.state} ({lay.reason})" for lay in self.layers
                if lay.state != "applied"]
        head = "fully enforced" if self.fully_enforced else "partially enforced"
        return head + (": " + "; ".join(weak) if weak else "")


class LaunchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What to run and as whom. ``env`` is the caller's environment, filtered by the policy's
    environment rules; ``extra_env`` is set afterwards as is (proxy variables, phantom tokens).
    ``uid``/``gid`` default to the launching process's own; another uid needs root."""

    argv: tuple[str, ...]
    cwd: str
    # The program's path, found by the system daemon with the caller's rights
    # (``find_executable`` as the caller); None: the engine finds ``argv[0]`` itself.
    executable: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()
    uid: int | None = None
    gid: int | None = None
    # The proxy's port inside the session's network namespace (None: the engine picks one);
    # the caller puts it in ``extra_env`` (HTTP_PROXY...) before launching.
    proxy_port: int | None = None
    # Verified files: (absolute path, the exact bytes verified). The session reads these bytes
    # at that path, whatever happens to the file on the host afterwards (trust pinning).
    pins: tuple[tuple[str, bytes], ...] = ()
    # Host sockets bound into the view: (path in the view, host path). The daemon's per-session
    # tool socket (``nonod.toolsandbox``); the view path lies in the sandbox's own root.
    binds: tuple[tuple[str, str], ...] = ()
    # ``nonoctl learn`` only: the session's seccomp filter lets ptrace (and process_vm_readv)
    # through, so that strace can run inside the session as the program's parent. Set by the
    # daemon's learn path, never from a profile or a client's launch request.
    allow_ptrace: bool = False
    # The daemon's kernel-audit tag (see ``nonod.audit._kernel``): the launcher writes it to
    # its loginuid so that the session's filesystem denials can be told apart. Set by the
    # daemon only; 0 means none.
    audit_tag: int = 0
    # The session's oom_score_adj (0..1000), written before the launcher leaves the daemon's
    # user namespace (so that, for a root daemon, the program cannot lower it again); None
    # leaves the fork server's own.
    oom_score_adj: int | None = None
    # The session's ``cgroup.procs`` files (``nonod.cgroups``): the launcher joins them before
    # anything else, so the program is born inside its limits. Set by the daemon only.
    cgroup_procs: tuple[str, ...] = ()
    # cgroup v1: where the fork server keeps warm launchers in groups of their own, ready to
    # become a session's ((controller, subtree) pairs), and the limits it then writes there.
    cgroup_pool: tuple[tuple[str, str], ...] = ()
    cgroup_limits: CgroupLimits | None = None
    # ``(st_dev, st_ino)`` of the working directory the daemon read the trust policies from
    # and verified (``nonod.trust.PolicyFiles.workdir_identity``): the program starts only in
    # that directory. The view names ``cwd`` again by path, and a directory renamed into its
    # place meanwhile (by whoever may rename in a directory above it) was never verified.
    # None: not checked (no trust verification asked).
    cwd_identity: tuple[int, int] | None = None


class ExitStatus(msgspec.Struct, frozen=True, kw_only=True):
    """How a sandboxed program ended: an exit ``code`` or the ``signal`` that killed it."""

    code: int | None = None
    signal: int | None = None

    @property
    def shell_code(self) -> int:
        """The status a shell would report: the code, or 128 + signal number."""
        if self.signal is not None:
            return 128 + self.signal
        return self.code if self.code is not None else 255
