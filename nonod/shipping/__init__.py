"""Shipping audit off the host: an exporter and its sinks.

Public face::

    sinks = [(SyslogSink("siem", "10.0.0.5", 6514, ssl_context=ctx), LaneSettings()),
             (OtlpSink("otel", "http://127.0.0.1:4318/v1/logs"), LaneSettings()),
             (EnvelopeSink("plane", "https://plane/v1/envelopes", signer=signer),
              LaneSettings())]
    exporter = Exporter(state_dir, sinks, hub=hub, on_backlog=...)
    await nursery.start(exporter.run)

A library: it reads the audit files of a state directory and knows nothing of the daemon.
``docs/operations.md`` ("Shipping audit off the host") describes the guarantees.
"""

from __future__ import annotations

from ._errors import CursorError as CursorError
from ._errors import ExportError as ExportError
from ._errors import SinkError as SinkError
from ._exporter import BacklogChanged as BacklogChanged
from ._exporter import Exporter as Exporter
from ._exporter import LaneSettings as LaneSettings
from ._exporter import LaneStatistics as LaneStatistics
from ._exporter import Sink as Sink
from ._source import ShipRecord as ShipRecord
from ._syslog import SyslogSink as SyslogSink
