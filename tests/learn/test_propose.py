"""The views of a LearnResult: nono's learn JSON, the profile, the summary, the reduction."""

from __future__ import annotations

import msgspec

from nonod.learn import (
    Covered,
    DeniedTouch,
    DirectAddress,
    LearnProgress,
    LearnResult,
    ListeningPort,
    OutboundHost,
    ProposedGrant,
    Skipped,
)
from nonod.policy import Access, Grant, NetworkPolicy, ResolvedPolicy
from nonod.profiles import ResolveContext, parse_profile, resolve

HOME = "/home/ada"

RESULT = LearnResult(
    command=("python3", "bot.py"),
    workdir="/srv/bot",
    home=HOME,
    workdir_access=Access.READWRITE,
    groups=("python_runtime",),
    grants=(
        ProposedGrant(path="/etc/bot", access=Access.READ, is_file=False, why="listed"),
        ProposedGrant(path="/var/cache/bot", access=Access.READWRITE, is_file=False,
                      why="entries created or removed"),
        ProposedGrant(path=f"{HOME}/.config/bot/config.toml", access=Access.READ,
                      is_file=True, why="used"),
        ProposedGrant(path="/var/log/bot.log", access=Access.WRITE, is_file=True, why="used"),
    ),
    outbound=(OutboundHost(hostname="api.github.com", port=443, count=3),
              OutboundHost(hostname="hooks.example.net", port=8443, count=1)),
    listening=(ListeningPort(address="127.0.0.1", port=5001, count=1),),
    covered=(Covered(path="/usr/lib/python3.11", access=Access.READ,
                     covered_by="system_read_linux"),),
    denied_touched=(DeniedTouch(path=f"{HOME}/.ssh/id_rsa", denied_by="group:deny_credentials",
                                uses=("read",)),),
    skipped=(Skipped(path=HOME, reason="listed a directory too broad to grant"),),
    addresses=(DirectAddress(address="140.82.112.3", port=443, count=1, via="direct"),),
    exit_code=0,
    duration=1.5,
)


def test_nono_learn_json_shape() -> None:
    doc = msgspec.json.decode(RESULT.to_nono_json())
    assert set(doc) == {"filesystem", "network", "nonod"}
    assert doc["filesystem"] == {
        "allow": ["/var/cache/bot"], "read": ["/etc/bot"], "write": [],
        "allow_file": [], "read_file": [f"{HOME}/.config/bot/config.toml"],
        "write_file": ["/var/log/bot.log"]}
    assert doc["network"]["outbound"] == [
        {"hostname": "api.github.com", "port": 443, "count": 3},
        {"hostname": "hooks.example.net", "port": 8443, "count": 1}]
    assert doc["network"]["listening"] == [{"addr": "127.0.0.1", "port": 5001, "count": 1}]
    assert doc["nonod"]["denied_touched"][0]["path"] == f"{HOME}/.ssh/id_rsa"
    assert "covered" not in doc["nonod"]
    full = msgspec.json.decode(RESULT.to_nono_json(include_covered=True))
    assert full["nonod"]["covered"][0]["covered_by"] == "system_read_linux"


def test_profile_is_complete_and_loads() -> None:
    data = RESULT.to_profile("bot")
    doc = msgspec.json.decode(data)
    assert doc["meta"]["name"] == "bot"
    assert doc["workdir"] == {"access": "readwrite"}
    assert doc["groups"] == {"include": ["python_runtime"]}
    assert doc["filesystem"]["read_file"] == ["$HOME/.config/bot/config.toml"]
    assert doc["network"] == {"allow_domain": ["api.github.com", "hooks.example.net"],
                              "open_port": [8443], "listen_port": [5001]}
    profile = parse_profile(data, "bot")
    assert profile.filesystem.allow == ("/var/cache/bot",)
    extended = msgspec.json.decode(RESULT.to_profile("bot2", extends="default"))
    assert extended["extends"] == "default"


def test_a_quiet_program_gets_a_blocked_network() -> None:
    quiet = msgspec.structs.replace(RESULT, outbound=(), listening=())
    doc = msgspec.json.decode(quiet.to_profile("quiet"))
    assert doc["network"] == {"block": True}
    assert any("blocks the network" in line for line in quiet.summary_lines())


def test_the_summary_says_an_extra_port_is_for_every_host() -> None:
    """The profile's `open_port` opens the port for every allowed host (ports are not per
    host): the summary says so instead of showing only the host:port pair asked for
    (before: `hooks.example.net:8443` alone, while api.github.com:8443 was granted too)."""
    text = "\n".join(RESULT.summary_lines())
    assert ("open_port 8443  (for every host the profile allows, not only hooks.example.net; "
            "and each host above on 80 and 443 too)") in text
    assert "open_port 443" not in text


def test_summary_lines() -> None:
    lines = RESULT.summary_lines()
    text = "\n".join(lines)
    assert lines[0] == "learned: python3 bot.py (exit 0 after 1.5 s)"
    assert "workdir   /srv/bot (readwrite)" in text
    assert "groups    python_runtime" in text
    assert "read_file   /home/ada/.config/bot/config.toml  (used)" in text
    assert "api.github.com:443  (3 times)" in text
    assert "listen_port 5001" in text
    assert f"{HOME}/.ssh/id_rsa  (deny_credentials: read)" in text
    assert "140.82.112.3:443" in text and "bypassing the proxy" in text
    assert "already covered" not in text
    assert "covered_by system_read_linux" in "\n".join(RESULT.summary_lines(include_covered=True))
    timed = msgspec.structs.replace(RESULT, timed_out=True, exit_code=None, duration=60.2)
    assert "stopped at the time limit after 60.2 s" in timed.summary_lines()[0]


def test_diff_against_a_base_lists_only_what_it_lacks() -> None:
    base = ResolvedPolicy(
        name="base",
        grants=(Grant(path="/etc", access=Access.READ),
                Grant(path="/var/log/bot.log", access=Access.READ, is_file=True)),
        denials=(),
        workdir="/srv/bot",
        workdir_access=Access.READ,
        network=NetworkPolicy(restricted=True, allow_domain=("*.github.com",),
                              listen_ports=(5001,)),
        groups=("python_runtime",),
    )
    reduced = RESULT.diff_against(base)
    assert reduced.base == "base"
    assert [g.path for g in reduced.grants] == [
        "/var/cache/bot", f"{HOME}/.config/bot/config.toml", "/var/log/bot.log"]
    assert reduced.groups == ()
    assert reduced.workdir_access is Access.READWRITE  # the base only reads it
    assert [h.hostname for h in reduced.outbound] == ["hooks.example.net"]
    assert reduced.listening == ()
    doc = msgspec.json.decode(reduced.to_nono_json())
    assert doc["nonod"]["base"] == "base"


def test_diff_against_an_unrestricted_or_resolved_profile() -> None:
    ctx = ResolveContext.for_user(home=HOME, workdir="/", uid=1000, environ={})
    default = resolve(parse_profile(b'{"meta": {"name": "open"}}', "open"), ctx)
    assert not default.network.restricted
    reduced = RESULT.diff_against(default)
    assert reduced.outbound == ()  # an unrestricted network reaches every host already
    assert "/etc/bot" not in [g.path for g in reduced.grants]  # system_read_linux has /etc


def test_progress_line() -> None:
    line = LearnProgress(elapsed=3.2, remaining=56.8, paths=120, hosts=1, listening=1).line()
    assert line == "learning: 120 paths, 1 host, 1 listening port, 57 s left"
    open_ended = LearnProgress(elapsed=3.2, remaining=None, paths=0, hosts=2, listening=0)
    assert open_ended.line() == "learning: 0 paths, 2 hosts, 3 s"
