"""``[[export]]`` tables: what the daemon accepts, refuses, and builds from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nonod._config import ConfigError, parse_config
from nonod._export import build_exporter
from nonod.audit import EcdsaP256Signer
from nonod.shipping import SyslogSink
from nonod.shipping._envelope import EnvelopeSink
from nonod.shipping._otlp import OtlpSink

DOCUMENTED = """
[audit]
sign_key = "file:///etc/nono/audit.key"

[[export]]
name = "siem"
type = "syslog"
address = "syslog.example.net:6514"
tls = true
facility = "authpriv"

[[export]]
name = "otel"
type = "otlp"
url = "http://127.0.0.1:4318/v1/logs"

[[export]]
name = "plane"
type = "envelope"
url = "https://plane.example.net/v1/audit/envelopes"
max_backlog_bytes = 1073741824
"""


def test_the_documented_configuration_builds_three_sinks(tmp_path: Path) -> None:
    config = parse_config(DOCUMENTED, source="nonod.toml")
    signer = EcdsaP256Signer(ec.generate_private_key(ec.SECP256R1()))
    exporter = build_exporter(tmp_path, config.export, signer=signer, hub=None)
    sinks = exporter.sinks()
    assert [type(s) for s in sinks] == [SyslogSink, OtlpSink, EnvelopeSink]
    siem = sinks[0]
    assert isinstance(siem, SyslogSink)
    assert (siem.host, siem.port, siem.facility) == ("syslog.example.net", 6514, 10)
    assert siem.ssl_context is not None
    assert exporter.undelivered() == set()  # no session files yet


@pytest.mark.parametrize(("table", "message"), [
    ('name = "a"\ntype = "syslog"\nurl = "http://x/"', "needs `address`"),
    ('name = "a"\ntype = "syslog"\naddress = "no-port"', "host:port"),
    ('name = "a"\ntype = "otlp"\naddress = "x:1"', "needs `url`"),
    ('name = "a"\ntype = "otlp"\nurl = "ftp://x/y"', "http:// or https://"),
    ('name = "A B"\ntype = "otlp"\nurl = "http://x/y"', "export[0].name"),
    ('name = "a"\ntype = "kafka"\nurl = "http://x/y"', "export[0].type"),
    ('name = "a"\ntype = "envelope"\nurl = "http://x/y"', "[audit] sign_key"),
])
def test_bad_tables_are_refused_naming_the_problem(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[[export]]\n{table}\n", source="nonod.toml")
    assert message in info.value.message


def test_two_sinks_may_not_share_a_name() -> None:
    table = '[[export]]\nname = "a"\ntype = "otlp"\nurl = "http://x/y"\n'
    with pytest.raises(ConfigError, match="same name"):
        parse_config(table * 2, source="nonod.toml")
