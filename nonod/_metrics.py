"""What the daemon counts for Prometheus: :class:`Metrics`.

One object, built by the composition root (``_daemon.py``) when ``[metrics] enabled = true``
and handed to the registry, which hands it to each session. The registry calls it where a
launch starts, is refused and ends; a session calls it at its audit boundary for every proxy
decision, credential injection, filesystem denial and audit append. Gauges that are cheaper
to read than to keep (sessions by state, audit records waiting for their fsync) are computed
at scrape time from an :class:`Observed` source through a custom collector.

The exposition is prometheus_client's (Prometheus text or OpenMetrics, as the scraper asks),
from a private ``CollectorRegistry``: nothing here is module state.

Every label value comes from a bounded set: reason codes are ``NonoError`` class codes,
decisions, modes and end reasons are literals, and route names (chosen by profiles) are capped
by :class:`BoundedLabel`. No label ever holds a host name, a path or anything a session chose.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Final, Protocol, final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

#: Distinct values a label of open-ended origin (route names, error codes) may take; later
#: values are counted as ``other``.
LABEL_CAP: Final = 32
OTHER: Final = "other"
SESSION_STATES: Final = ("starting", "running", "exited")
_LAUNCH_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_APPEND_BUCKETS: Final = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1)
_LABEL_TEXT = re.compile(r"^[a-z0-9][a-z0-9_.:/-]{0,63}$", re.IGNORECASE)


class Observed(Protocol):
    """What the scrape-time gauges read (the session registry)."""

    def state_counts(self) -> Mapping[str, int]: ...

    def audit_backlog(self) -> int: ...


class SinkFigures(Protocol):
    """One audit export sink's figures (``nonod.shipping``'s lane statistics)."""

    delivered_records: int
    failures: int
    pending_bytes: int
    backlog_full: bool


class ExportObserved(Protocol):
    """What the export gauges read (the audit exporter): figures per sink name."""

    def statistics(self) -> Mapping[str, SinkFigures]: ...


@final
class BoundedLabel:
    """A label whose values come from configuration: the first ``cap`` distinct well-formed
    values are kept, anything else (and anything past the cap) is ``other``."""

    def __init__(self, cap: int = LABEL_CAP) -> None:
        self._cap = cap
        self._seen: set[str] = set()

    def value(self, raw: str) -> str:
        if raw in self._seen:
            return raw
        if len(self._seen) >= self._cap or not _LABEL_TEXT.match(raw):
            return OTHER
        self._seen.add(raw)
        return raw


@final
class _Gauges(Collector):
    """Sessions by state and the audit backlog, read from the registry at each scrape."""

    def __init__(self) -> None:
        self.source: Observed | None = None
        self.export: ExportObserved | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._export_figures()
        sessions = GaugeMetricFamily("nono_sessions", "Sessions the daemon knows, by state.",
                                     labels=["state"])
        backlog = GaugeMetricFamily(
            "nono_audit_backlog_records",
            "Audit records written by live sessions and not yet fsynced.")
        counts: Mapping[str, int] = {}
        pending = 0
        if self.source is not None:
            counts = self.source.state_counts()
            pending = self.source.audit_backlog()
        for state in SESSION_STATES:
            sessions.add_metric([state], counts.get(state, 0))
        backlog.add_metric([], pending)
        yield sessions
        yield backlog

    def _export_figures(self) -> Iterator[Metric]:
        """Per ``[[export]]`` sink (names from the configuration: bounded)."""
        if self.export is None:
            return
        pending = GaugeMetricFamily(
            "nono_audit_export_pending_bytes",
            "Audit bytes written but not yet acknowledged by the sink.", labels=["sink"])
        full = GaugeMetricFamily(
            "nono_audit_export_backlog_full",
            "1 while the sink's backlog is over max_backlog_bytes (nothing is dropped).",
            labels=["sink"])
        delivered = CounterMetricFamily(
            "nono_audit_export_delivered_records", "Audit records the sink acknowledged.",
            labels=["sink"])
        failures = CounterMetricFamily(
            "nono_audit_export_failures", "Failed deliveries to the sink.", labels=["sink"])
        for name, figures in sorted(self.export.statistics().items()):
            pending.add_metric([name], figures.pending_bytes)
            full.add_metric([name], 1 if figures.backlog_full else 0)
            delivered.add_metric([name], figures.delivered_records)
            failures.add_metric([name], figures.failures)
        yield pending
        yield full
        yield delivered
        yield failures


@final
class Metrics:
    """The daemon's counters and histograms, and their exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._gauges = _Gauges()
        reg.register(self._gauges)
        ProcessCollector(registry=reg)
        self._launches = Counter("nono_launches", "Sessions started.", registry=reg)
        self._refusals = Counter("nono_launch_refusals", "Launches refused, by error code.",
                                 ["reason"], registry=reg)
        self._launch_seconds = Histogram(
            "nono_launch_duration_seconds", "From a launch request reaching the registry to "
            "the program running.", buckets=_LAUNCH_BUCKETS, registry=reg)
        self._ended = Counter("nono_sessions_ended", "Sessions ended, by reason.", ["reason"],
                              registry=reg)
        self._decisions = Counter(
            "nono_network_decisions", "Proxy and inbound-forward decisions, by mode, decision "
            "and reason code.", ["mode", "decision", "reason"], registry=reg)
        self._bytes = Counter(
            "nono_network_bytes", "Bytes relayed for sessions; out: from the session, in: to "
            "it.", ["mode", "direction"], registry=reg)
        self._injections = Counter("nono_credential_injections",
                                   "Real credentials put into requests, by route name.",
                                   ["route"], registry=reg)
        self._fs_denied = Counter("nono_fs_denied",
                                  "Filesystem denials observed through the kernel audit.",
                                  registry=reg)
        self._append_seconds = Histogram(
            "nono_audit_append_duration_seconds", "Time to append one audit record (masking, "
            "hashing, the write).", buckets=_APPEND_BUCKETS, registry=reg)
        self._codes = BoundedLabel()
        self._routes = BoundedLabel()
        self._reasons = BoundedLabel()

    def observe_export(self, exporter: ExportObserved) -> None:
        """Read the audit exporter's figures at each scrape."""
        self._gauges.export = exporter

    def observe(self, source: Observed) -> None:
        """Read the scrape-time gauges from ``source`` (the registry)."""
        self._gauges.source = source

    # -- the registry
    def launch_started(self, seconds: float) -> None:
        self._launches.inc()
        self._launch_seconds.observe(seconds)

    def launch_refused(self, code: str) -> None:
        self._refusals.labels(self._codes.value(code)).inc()

    def session_ended(self, reason: str) -> None:
        self._ended.labels(reason or "exited").inc()

    def fs_denied(self) -> None:
        self._fs_denied.inc()

    # -- a session's audit boundary
    def network_decision(self, *, mode: str, decision: str, reason: str, bytes_in: int,
                         bytes_out: int) -> None:
        self._decisions.labels(mode, decision, self._reasons.value(reason or "none")).inc()
        if bytes_in:
            self._bytes.labels(mode, "in").inc(bytes_in)
        if bytes_out:
            self._bytes.labels(mode, "out").inc(bytes_out)

    def credential_injected(self, route: str) -> None:
        self._injections.labels(self._routes.value(route)).inc()

    def audit_appended(self, seconds: float) -> None:
        self._append_seconds.observe(seconds)

    # -- the endpoint
    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The body and content type for a scrape whose ``Accept`` header is ``accept``
        (OpenMetrics when asked for, the Prometheus text format otherwise)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
