"""The one error hierarchy of nono.

Every error that reaches a user carries a stable dotted ``code`` (what kind of failure, for
scripts and exit statuses), a ``message`` (what happened and why, for people) and an optional
``hint`` (what to do about it). Messages never contain secrets or upstream bodies.
"""

from __future__ import annotations

TYPE_CHECKING = False  # ``typing`` is not imported at run time: ``nonoctl._lean`` uses this
if TYPE_CHECKING:
    from typing import ClassVar


class NonoError(Exception):
    """Base of every error nono raises on purpose."""

    code: ClassVar[str] = "nono.error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """The message and hint, as shown to a person."""
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ProfileError(NonoError):
    """A profile could not be found, parsed or resolved.

    ``source`` names the file (or built-in profile) and ``path`` the JSON path (``$.network``)
    of the offending value, when known.
    """

    code = "profile.invalid"

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if source:
            where = f"{source}: "
        if path:
            where += f"{path}: "
        super().__init__(where + message, hint=hint)
        self.source = source
        self.path = path


class ProfileNotFound(ProfileError):
    code = "profile.not_found"


class UnknownKey(ProfileError):
    code = "profile.unknown_key"


class UnsupportedFeature(ProfileError):
    """The profile asks for a nono feature nonod does not provide: refused, never ignored.
    The hint says what to write instead."""

    code = "profile.unsupported"


class ExtendsError(ProfileError):
    """`extends` names a missing profile, forms a cycle, or nests too deep."""

    code = "profile.extends"


class PolicyError(NonoError):
    """A valid profile that cannot become an enforceable policy (missing required path...)."""

    code = "policy.invalid"


class BroadWorkdir(PolicyError):
    """A writable working-directory grant of `/`, `$HOME` or a system tree, not named."""

    code = "policy.broad_workdir"


class ProfileLinkWritable(PolicyError):
    """The launch's profile path goes through a symbolic link the session could re-point."""

    code = "policy.profile_link"


class GrantLinkWritable(PolicyError):
    """A grant or denial is named through a symbolic link the session could re-point."""

    code = "policy.grant_link"


class ResolutionChanged(PolicyError):
    """A kept profile resolution was found stale before the launch's program could start
    (``nonod._profile_source.KeptCheck``): the launch is redone on a fresh resolution."""

    code = "policy.resolution_changed"


class GrantOthersPlace(PolicyError):
    """A grant or the working directory is named through a name another user made in a
    directory others may write (``/tmp``, a group's): what it is, and where it leads, are
    theirs."""

    code = "policy.others_place"


class LaunchError(NonoError):
    """A launch was refused or failed before the program could run.

    ``step`` names the launcher step (``landlock``, ``mount``, ``seccomp``...), ``errno`` the
    error number the kernel returned, ``detail`` the path or value involved. The program never
    ran when this is raised.
    """

    code = "launch.failed"

    def __init__(
        self,
        message: str,
        *,
        step: str = "",
        errno: int = 0,
        detail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.step = step
        self.errno = errno
        self.detail = detail


class DaemonBusy(NonoError):
    """Refused at once: the daemon holds all it gives every caller together of something
    (threads stuck in file systems, launches it gave up on); a request that needs more is
    refused rather than kept waiting on what may never be let go."""

    code = "daemon.busy"


class LaunchBusy(LaunchError, DaemonBusy):
    """A launch refused at once for what the daemon holds (:class:`DaemonBusy`)."""

    code = "daemon.busy"


class EnforcementUnavailable(LaunchError):
    """A layer the policy requires cannot be applied on this machine."""

    code = "launch.enforcement"
