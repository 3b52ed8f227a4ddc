"""Audit: a live, tamper-evident record of every session.

Public face::

    hub = AuditHub()                                        # one per daemon
    ledger = await Ledger.open(state_dir)                   # one per daemon
    writer = await AuditWriter.create(state_dir, sid, hub=hub, ledger=ledger)
    await session_nursery.start(writer.run)                 # periodic fsync
    writer.append(SessionStarted(...))                      # written, then published
    await writer.seal()                                     # final record, ledger, signature

    sub = hub.subscribe(session=sid, kinds={"network"})     # live; dropped if it lags
    async for item in sub: ...                              # LiveRecord, then maybe Dropped

    verify_session_file(path, ledger=..., checker=...)      # VerifyResult or AuditVerifyError
    verify_envelope(data, checker=...)                      # a shipped session, the same way
    await append_daemon_lost(state_dir, sid, ledger=ledger) # at daemon start, per lost session

The event model, verification, rendering and retention import no trio (``nonoctl`` uses them);
the writer, ledger and hub are loaded on first use. ``docs/audit.md`` describes the format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._text import printable as printable
from ._chain import MerkleAccumulator as MerkleAccumulator
from ._chain import merkle_root as merkle_root
from ._envelope import build_envelope as build_envelope
from ._envelope import envelope_signature as envelope_signature
from ._envelope import verify_envelope as verify_envelope
from ._errors import AuditClosed as AuditClosed
from ._errors import AuditError as AuditError
from ._errors import AuditIncomplete as AuditIncomplete
from ._errors import AuditKeyError as AuditKeyError
from ._errors import AuditLedgerError as AuditLedgerError
from ._errors import AuditNotFound as AuditNotFound
from ._errors import AuditSignatureError as AuditSignatureError
from ._errors import AuditVerifyError as AuditVerifyError
from ._errors import AuditWriteError as AuditWriteError
from ._events import EVENT_KINDS as EVENT_KINDS
from ._events import REDACTED as REDACTED
from ._events import Approval as Approval
from ._events import CredentialInjected as CredentialInjected
from ._events import DaemonEvent as DaemonEvent
from ._events import Enforcement as Enforcement
from ._events import Entry as Entry
from ._events import Event as Event
from ._events import FsDenied as FsDenied
from ._events import Layer as Layer
from ._events import Network as Network
from ._events import Record as Record
from ._events import ResourceUsage as ResourceUsage
from ._events import Seal as Seal
from ._events import SessionEnded as SessionEnded
from ._events import SessionSealed as SessionSealed
from ._events import SessionStarted as SessionStarted
from ._events import SignalSent as SignalSent
from ._events import ToolEnded as ToolEnded
from ._events import ToolRefused as ToolRefused
from ._events import ToolStarted as ToolStarted
from ._events import TrustFailed as TrustFailed
from ._events import TrustVerified as TrustVerified
from ._events import ViewGuarded as ViewGuarded
from ._events import kind_of as kind_of
from ._events import redact_argv as redact_argv
from ._render import render_dropped as render_dropped
from ._render import render_record as render_record
from ._render import summarize as summarize
from ._retention import SessionSummary as SessionSummary
from ._retention import list_sessions as list_sessions
from ._retention import prune_sessions as prune_sessions
from ._sign import EcdsaP256Checker as EcdsaP256Checker
from ._sign import EcdsaP256Signer as EcdsaP256Signer
from ._sign import KeySigner as KeySigner
from ._sign import SignatureChecker as SignatureChecker
from ._sign import Signer as Signer
from ._sign import bundle_key_hint as bundle_key_hint
from ._verify import AUDIT_FILE as AUDIT_FILE
from ._verify import LEDGER_FILE as LEDGER_FILE
from ._verify import LedgerView as LedgerView
from ._verify import VerifyResult as VerifyResult
from ._verify import read_lines as read_lines
from ._verify import read_lines_from as read_lines_from
from ._verify import read_records as read_records
from ._verify import verify_ledger_file as verify_ledger_file
from ._verify import verify_session_file as verify_session_file

if TYPE_CHECKING:
    from ._fanout import AuditHub as AuditHub
    from ._fanout import Dropped as Dropped
    from ._fanout import LiveRecord as LiveRecord
    from ._fanout import Subscription as Subscription
    from ._writer import AuditWriter as AuditWriter
    from ._writer import Ledger as Ledger
    from ._writer import WriterStatistics as WriterStatistics
    from ._writer import append_closing as append_closing
    from ._writer import append_daemon_lost as append_daemon_lost

# The names that need trio, and the module that holds each.
_LAZY = {
    "AuditHub": "_fanout", "Dropped": "_fanout", "LiveRecord": "_fanout",
    "Subscription": "_fanout", "AuditWriter": "_writer", "Ledger": "_writer",
    "WriterStatistics": "_writer", "append_daemon_lost": "_writer", "append_closing": "_writer",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
