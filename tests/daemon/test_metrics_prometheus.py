"""A real Prometheus server scrapes a real daemon's metrics, and PromQL reads them back.

The daemon serves ``[metrics]`` on a loopback port; four things happen (a launch refused by
the registry, one refused for its profile, a session that runs and exits, a proxied request
that its profile denies);
Debian's ``prometheus`` scrapes every second into a temporary store, and queries over its
HTTP API must return the expected values within a bounded time.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DaemonThread
from .test_cli import CLI, cli_env
from .test_session_audit import launch_probe

PROMETHEUS = shutil.which("prometheus")
#: The configurations come from the docs' "Metrics" section, with a free port for 9464.
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
DOCUMENTED_PORT = "9464"
#: How long Prometheus has to start, scrape and answer every query.
DEADLINE = 90.0

#: PromQL -> the value it must return once the scrapes have seen everything.
EXPECTED = {
    'up{job="nonod"}': 1.0,
    "nono_launches_total": 1.0,
    'nono_launch_refusals_total{reason="audit.sign_key"}': 1.0,
    'nono_launch_refusals_total{reason="profile.not_found"}': 1.0,
    "nono_launch_duration_seconds_count": 1.0,
    'nono_sessions{state="exited"}': 1.0,
    'nono_sessions{state="running"}': 0.0,
    'nono_sessions_ended_total{reason="exited"}': 1.0,
    'nono_network_decisions_total{mode="connect",decision="deny",reason="not_allowed"}': 1.0,
    'sum(nono_network_decisions_total{decision="allow"}) or vector(0)': 0.0,
    "nono_audit_append_duration_seconds_count >= bool 1": 1.0,
    "nono_audit_backlog_records": 0.0,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _documented(language: str, port: int) -> str:
    """The first ``language`` block of the "Metrics" section of docs/operations.md."""
    section = DOCS.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert block is not None, f"no {language} block in the Metrics section of {DOCS}"
    assert DOCUMENTED_PORT in block.group(1)
    return block.group(1).replace(DOCUMENTED_PORT, str(port))


@pytest.fixture
def metrics_port() -> int:
    return _free_port()


@pytest.fixture
def daemon_with_metrics(short_tmp: Path, metrics_port: int) -> Iterator[DaemonThread]:
    handle = DaemonThread(short_tmp, config=_documented("toml", metrics_port)).start()
    yield handle
    handle.stop()


@pytest.fixture
def prometheus(short_tmp: Path, metrics_port: int) -> Iterator[str]:
    """A Prometheus server scraping the daemon every second; yields its API's base URL."""
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is missing (Debian's `prometheus` package; "
                    "`make test` installs it as root)")
    home = short_tmp / "prometheus"
    home.mkdir()
    (home / "prometheus.yml").write_text(_documented("yaml", metrics_port))
    web = f"127.0.0.1:{_free_port()}"
    log = (home / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={home / 'prometheus.yml'}",
         f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address={web}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=home)
    try:
        yield f"http://{web}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _query(base: str, promql: str) -> float | None:
    """The single value ``promql`` returns now, or None (no answer yet, or no series)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 (loopback URL)
            answer = json.loads(reply.read())
    except OSError:
        return None
    result = answer["data"]["result"]
    if answer["status"] != "success" or len(result) != 1:
        return None
    return float(result[0]["value"][1])


@pytest.mark.slow
def test_prometheus_scrapes_the_daemon_and_promql_reads_the_values(
        daemon_with_metrics: DaemonThread, prometheus: str, short_tmp: Path) -> None:
    run = CLI(cli_env(daemon_with_metrics.socket, short_tmp), short_tmp)
    refused = run("launch", "--audit-sign-key", f"file://{short_tmp}/no-such-key", "--",
                  "/bin/true")
    assert refused.returncode != 0 and "key" in refused.stderr, refused.stderr
    unknown = run("launch", "--profile", "no-such-profile", "--", "/bin/true")
    assert unknown.returncode != 0 and "no-such-profile" in unknown.stderr, unknown.stderr
    done = launch_probe(run, short_tmp)
    assert done.returncode == 3, done.stderr
    assert "proxy answered 403" in done.stdout

    deadline = time.monotonic() + DEADLINE
    got: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        got = {promql: _query(prometheus, promql) for promql in EXPECTED}
        if got == EXPECTED:
            break
        time.sleep(0.5)  # the next poll of the API, not a wait for an event we could see
    log = (short_tmp / "prometheus" / "prometheus.log").read_text(errors="replace")
    assert got == EXPECTED, log[-3000:]
