"""The daemon's side of shipping audit off the host: ``[[export]]`` tables become sinks.

The exporter itself is the library ``nonod.shipping``; this module only builds it from the
configuration (TLS contexts, the audit signing key for envelopes) and hands retention the
sessions a sink still needs.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from ._config import ConfigError, ExportSection

if TYPE_CHECKING:
    from .audit._fanout import AuditHub
    from .audit._sign import Signer
    from .audit._writer import Ledger
    from .shipping import Exporter, Sink


def _ssl_context(section: ExportSection) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if section.ca_file is not None:
        try:
            context.load_verify_locations(cafile=section.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"export {section.name}: cannot load ca_file "
                              f"{section.ca_file}: {exc}") from exc
    return context


def build_sink(section: ExportSection, *, signer: Signer | None) -> Sink:
    from .shipping import SyslogSink
    from .shipping._envelope import EnvelopeSink
    from .shipping._otlp import OtlpSink
    from .shipping._syslog import FACILITIES

    # The configuration's checks made sure a syslog sink has an address, the others a URL.
    if section.type == "syslog":
        host, _, port = (section.address or "").rpartition(":")
        return SyslogSink(section.name, host.strip("[]"), int(port),
                          facility=FACILITIES[section.facility],
                          ssl_context=_ssl_context(section) if section.tls else None,
                          timeout=section.timeout)
    url = section.url or ""
    tls = _ssl_context(section) if url.startswith("https://") else None
    if section.type == "otlp":
        return OtlpSink(section.name, url, ssl_context=tls, timeout=section.timeout)
    if signer is None:
        raise ConfigError(f"export {section.name}: an envelope sink needs [audit] sign_key")
    return EnvelopeSink(section.name, url, signer=signer, ssl_context=tls,
                        timeout=section.timeout)


def build_exporter(state_dir: Path, sections: tuple[ExportSection, ...], *,
                   signer: Signer | None, hub: AuditHub | None,
                   ledger: Ledger | None = None) -> Exporter:
    from .shipping import Exporter, LaneSettings

    sinks = [(build_sink(s, signer=signer),
              LaneSettings(batch=s.batch, max_backlog_bytes=s.max_backlog_bytes,
                           retry_min=s.retry_min, retry_max=max(s.retry_min, s.retry_max)))
             for s in sections]
    return Exporter(state_dir, sinks, hub=hub, ledger=ledger)
