"""The metrics: what the exposition says after the daemon's calls, bounded labels, the
``[metrics]`` configuration, and the endpoint over a real Unix socket."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from nonod._config import ConfigError, parse_config
from nonod._metrics import LABEL_CAP, Metrics
from nonod._metrics_server import MetricsError, serve_metrics


class _Registry:
    """The two scrape-time figures the registry provides, as plain values."""

    def state_counts(self) -> Mapping[str, int]:
        return {"running": 2, "exited": 5}

    def audit_backlog(self) -> int:
        return 7


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _recorded() -> Metrics:
    metrics = Metrics()
    metrics.observe(_Registry())
    metrics.launch_started(0.2)
    metrics.launch_refused("session.name_taken")
    metrics.launch_refused("audit.key")
    metrics.session_ended("exited")
    metrics.network_decision(mode="connect", decision="deny", reason="not_allowed",
                             bytes_in=0, bytes_out=0)
    metrics.network_decision(mode="http", decision="allow", reason="allowed_host",
                             bytes_in=100, bytes_out=30)
    metrics.credential_injected("github")
    metrics.fs_denied()
    metrics.audit_appended(0.00003)
    return metrics


def test_the_exposition_reads_back_what_was_recorded() -> None:
    body, content_type = _recorded().exposition("")
    assert content_type.startswith("text/plain")
    got = _samples(body.decode())
    assert got[("nono_launches_total", ())] == 1
    assert got[("nono_launch_refusals_total", (("reason", "session.name_taken"),))] == 1
    assert got[("nono_launch_refusals_total", (("reason", "audit.key"),))] == 1
    assert got[("nono_launch_duration_seconds_bucket", (("le", "0.25"),))] == 1
    assert got[("nono_launch_duration_seconds_bucket", (("le", "0.1"),))] == 0
    assert got[("nono_sessions_ended_total", (("reason", "exited"),))] == 1
    assert got[("nono_network_decisions_total", (
        ("decision", "deny"), ("mode", "connect"), ("reason", "not_allowed")))] == 1
    assert got[("nono_network_bytes_total", (("direction", "in"), ("mode", "http")))] == 100
    assert got[("nono_network_bytes_total", (("direction", "out"), ("mode", "http")))] == 30
    assert got[("nono_credential_injections_total", (("route", "github"),))] == 1
    assert got[("nono_fs_denied_total", ())] == 1
    assert got[("nono_audit_append_duration_seconds_count", ())] == 1
    assert got[("nono_sessions", (("state", "running"),))] == 2
    assert got[("nono_sessions", (("state", "starting"),))] == 0
    assert got[("nono_sessions", (("state", "exited"),))] == 5
    assert got[("nono_audit_backlog_records", ())] == 7
    assert ("process_open_fds", ()) in got


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    body, content_type = _recorded().exposition(
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    names = {family.name for family in parse_openmetrics(text)}
    assert {"nono_launches", "nono_network_decisions", "nono_sessions"} <= names


def test_labels_from_configuration_are_capped_and_never_free_text() -> None:
    metrics = Metrics()
    for n in range(LABEL_CAP + 5):
        metrics.credential_injected(f"route{n}")
    metrics.launch_refused("a message with spaces, not a code")
    got = _samples(metrics.exposition("")[0].decode())
    routes = {dict(labels)["route"] for name, labels in got
              if name == "nono_credential_injections_total"}
    assert len(routes) == LABEL_CAP + 1
    assert got[("nono_credential_injections_total", (("route", "other"),))] == 5
    assert got[("nono_launch_refusals_total", (("reason", "other"),))] == 1


@pytest.mark.parametrize(
    ("listen", "extra", "match"),
    [
        ("0.0.0.0:9464", "", "not a loopback address"),
        ("192.0.2.1:9464", "", "not a loopback address"),
        ("localhost:9464", "", "must be IP:PORT or unix:/abs/path"),
        ("127.0.0.1", "", "must be IP:PORT"),
        ("127.0.0.1:0", "", "must be IP:PORT"),
        ("unix:run/m.sock", "", "must be an absolute path"),
    ],
)
def test_metrics_listen_is_checked(listen: str, extra: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(f'[metrics]\nenabled = true\nlisten = "{listen}"\n{extra}',
                     source="nonod.toml")


def test_metrics_are_off_by_default_and_remote_needs_consent() -> None:
    assert parse_config("", source="t").metrics.enabled is False
    section = parse_config('[metrics]\nlisten = "0.0.0.0:9464"\nallow_remote = true\n',
                           source="t").metrics
    assert section.listen == "0.0.0.0:9464"
    assert parse_config('[metrics]\nlisten = "[::1]:9464"\n', source="t").metrics


async def _ask(path: Path, request: bytes) -> bytes:
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        await stream.send_all(request)
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


async def test_the_endpoint_serves_metrics_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_metrics, _recorded(), f"unix:{path}")
        assert path.stat().st_mode & 0o777 == 0o600
        reply = await _ask(path, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert _samples(body.decode())[("nono_launches_total", ())] == 1
        assert (await _ask(path, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
            b"HTTP/1.1 404 ")
        assert (await _ask(path, b"POST /metrics HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 0\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        assert (await _ask(path, b"\x00garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        head_only = await _ask(path, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head_only.startswith(b"HTTP/1.1 200 ") and head_only.endswith(b"\r\n\r\n")
        nursery.cancel_scope.cancel()
    assert not path.exists()


class _Failing(Collector):
    def __init__(self) -> None:
        self.failing = False

    def collect(self) -> Iterator[Metric]:
        if self.failing:
            raise RuntimeError("a collector failed")
        return iter(())


async def test_a_failed_scrape_ends_its_connection_only(tmp_path: Path) -> None:
    metrics = Metrics()
    failing = _Failing()
    metrics.registry.register(failing)
    failing.failing = True
    path = tmp_path / "metrics.sock"
    get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_metrics, metrics, f"unix:{path}")
        assert await _ask(path, get) == b""
        failing.failing = False
        assert (await _ask(path, get)).startswith(b"HTTP/1.1 200 ")
        nursery.cancel_scope.cancel()


async def test_an_address_in_use_is_a_clear_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        with pytest.raises(MetricsError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await serve_metrics(Metrics(), f"127.0.0.1:{port}")
    finally:
        await listeners[0].aclose()


def test_the_daemon_does_not_load_prometheus_client_unless_metrics_are_on() -> None:
    """Importing it costs tens of milliseconds of every daemon start; off by default."""
    code = ("import sys, nonod._daemon, nonod.sessions, nonod.control; "
            "sys.exit('prometheus_client' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_audit_export_figures_per_sink() -> None:
    from nonod.shipping import LaneStatistics

    class Exporter:
        def statistics(self) -> dict[str, LaneStatistics]:
            return {"siem": LaneStatistics(delivered_records=40, failures=2,
                                           pending_bytes=4096, backlog_full=True),
                    "plane": LaneStatistics(delivered_records=3)}

    metrics = Metrics()
    metrics.observe_export(Exporter())
    got = _samples(metrics.exposition("")[0].decode())
    assert got[("nono_audit_export_pending_bytes", (("sink", "siem"),))] == 4096
    assert got[("nono_audit_export_backlog_full", (("sink", "siem"),))] == 1
    assert got[("nono_audit_export_backlog_full", (("sink", "plane"),))] == 0
    assert got[("nono_audit_export_delivered_records_total", (("sink", "siem"),))] == 40
    assert got[("nono_audit_export_failures_total", (("sink", "siem"),))] == 2
