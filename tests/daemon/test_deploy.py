"""The container deployment files (Containerfile, deploy/): what they configure parses, and the
Kubernetes ConfigMap carries the same agent profile as the image."""

from __future__ import annotations

import json
from pathlib import Path

from nonod._config import parse_config
from nonod.profiles import load_profile, parse_profile

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# network_ports: the agent uses the proxy, whose port Landlock opens on every address
LANDLOCK_ONLY = {"persistence", "creation_guard", "private_tmp", "network_ports", "host_proc"}


def test_image_config_parses_and_lets_the_daemon_choose_its_mode() -> None:
    config = parse_config((DEPLOY / "nonod.toml").read_text(), source="deploy/nonod.toml")
    assert config.sandbox.mode == "auto"
    assert config.daemon.profile_dir == "/etc/nono/profiles"


def test_agent_profile_accepts_the_landlock_only_layers() -> None:
    path = DEPLOY / "profiles" / "agent.json"
    parse_profile(path.read_bytes(), source=str(path))
    flat = load_profile(str(path), user_dir=None)
    assert flat.nonod is not None and set(flat.nonod.allow_degraded) == LANDLOCK_ONLY


def test_configmap_profile_is_the_image_profile() -> None:
    text = (DEPLOY / "kubernetes" / "agent-pod.yaml").read_text()
    block = text.split("agent.json: |\n", 1)[1].split("\n---\n", 1)[0]
    in_map = json.loads(block)
    in_image = json.loads((DEPLOY / "profiles" / "agent.json").read_text())
    for key in ("extends", "filesystem", "workdir", "network", "nonod"):
        assert in_map[key] == in_image[key], key
