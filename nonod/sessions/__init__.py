"""Sessions: every sandboxed program the daemon runs, from launch to sealed record.

Public face::

    registry = Registry(nursery=..., get_launcher=..., state_dir=..., limits=...)
    await registry.load()                                   # earlier records; lost sessions
    session = await registry.launch(SessionPlan(...))       # NonoError: nothing was started
    session.request_stop(reason="stopped", grace=10)        # returns at once
    await session.wait_exited()                             # once the record is final

Split by ownership: ``_registry`` (all sessions: launching, recording the end),
``_supervise`` (one running session until its program exits), ``_events`` (lifecycle events
and their subscribers), ``_session`` (one session: stop, signals, terminal), ``_output``
(terminal output: ring, log file, feeds), ``_records`` (``session.json`` and the session
directories), ``_caller_reads`` (a launch's reads of its caller's files, in the profile's
thread), ``_audit`` (a session's audit record for its whole life), ``_contracts`` (what
the sessions need of the engine), and ``_errors``/``_settings``. The control server turns
what these return into wire messages.
"""

from ._audit import SessionAudit as SessionAudit
from ._caller_reads import CallerReads as CallerReads
from ._caller_reads import find_program as find_program
from ._contracts import Caller as Caller
from ._contracts import GetLauncher as GetLauncher
from ._contracts import LauncherLike as LauncherLike
from ._contracts import Process as Process
from ._contracts import ResolutionCheck as ResolutionCheck
from ._contracts import SessionPlan as SessionPlan
from ._errors import NameTaken as NameTaken
from ._errors import NoTerminal as NoTerminal
from ._errors import NotRunning as NotRunning
from ._errors import RootRefused as RootRefused
from ._errors import SessionAmbiguous as SessionAmbiguous
from ._errors import SessionBusy as SessionBusy
from ._errors import SessionError as SessionError
from ._errors import SessionLimit as SessionLimit
from ._errors import SessionNotFound as SessionNotFound
from ._events import ApprovalNotice as ApprovalNotice
from ._events import EventFeed as EventFeed
from ._events import LifecycleEvent as LifecycleEvent
from ._output import OutputFeed as OutputFeed
from ._output import SessionOutput as SessionOutput
from ._output import history as history
from ._records import SessionRecord as SessionRecord
from ._registry import Registry as Registry
from ._session import Session as Session
from ._settings import AuditSettings as AuditSettings
from ._settings import SessionLimits as SessionLimits
