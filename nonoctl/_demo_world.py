"""The demo's throw-away world: a fake home, the gitbot project, the daemon's files.

::

    /tmp/nono-demo-XXXX/           0755, so that another uid could traverse it
    ├── home/                      the bot's $HOME
    │   ├── .ssh/id_ed25519        a fake private key: what the sandbox must keep out of reach
    │   └── gitbot/                the project: bot.py and GEMINI.md from examples/gitbot, .env
    ├── keyring/                   gnome-keyring's files and runtime directory
    ├── nonod.toml, nonod.log      the daemon's configuration and its log
    ├── ca.pem                     the fake upstreams' CA
    ├── run/nonod.sock             the daemon's control socket
    └── state/                     session records, output logs, audit files
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GITBOT_SOURCE = REPO / "examples" / "gitbot"
GITBOT_FILES = ("bot.py", "GEMINI.md")
FAKE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
            "FAKE-nono-demo-key-the-sandbox-must-never-read-this\n"
            "-----END OPENSSH PRIVATE KEY-----\n")


@dataclass(frozen=True)
class World:
    base: Path

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def project(self) -> Path:
        return self.home / "gitbot"

    @property
    def ssh_key(self) -> Path:
        return self.home / ".ssh" / "id_ed25519"

    @property
    def keyring_home(self) -> Path:
        return self.base / "keyring"

    @property
    def config(self) -> Path:
        return self.base / "nonod.toml"

    @property
    def daemon_log(self) -> Path:
        return self.base / "nonod.log"

    @property
    def ca_file(self) -> Path:
        return self.base / "ca.pem"

    @property
    def socket(self) -> Path:
        return self.base / "run" / "nonod.sock"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def notify_socket(self) -> Path:
        return self.base / "run" / "notify.sock"


def make_world() -> World:
    """Create the directories and files; the project gets a copy of examples/gitbot."""
    missing = [name for name in GITBOT_FILES if not (GITBOT_SOURCE / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{GITBOT_SOURCE}: missing {', '.join(missing)} (the demo "
                                "runs from a checkout of nono)")
    world = World(Path(tempfile.mkdtemp(prefix="nono-demo-", dir="/tmp")))
    try:
        world.base.chmod(0o755)
        world.ssh_key.parent.mkdir(mode=0o700, parents=True)
        world.ssh_key.write_text(FAKE_KEY)
        world.ssh_key.chmod(0o600)
        world.project.mkdir(parents=True)
        for name in GITBOT_FILES:
            shutil.copyfile(GITBOT_SOURCE / name, world.project / name)
        (world.base / "run").mkdir(mode=0o700)
    except BaseException:
        shutil.rmtree(world.base, ignore_errors=True)
        raise
    return world


def write_dotenv(world: World, *, port: int, webhook_secret: str, repo: str) -> Path:
    """The bot's .env, as in the seed: settings that are not API keys. No token is here."""
    path = world.project / ".env"
    path.write_text(f"WEBHOOK_SECRET={webhook_secret}\nGITHUB_REPO={repo}\nPORT={port}\n")
    path.chmod(0o600)
    return path


def write_config(world: World, pins: dict[str, str]) -> str:
    """``nonod.toml`` for the demo daemon; returns its text (JSON strings are TOML strings)."""
    table = ", ".join(f"{json.dumps(host)} = {json.dumps(addr)}"
                      for host, addr in sorted(pins.items()))
    text = (
        "[daemon]\n"
        f"socket = {json.dumps(str(world.socket))}\n"
        f"state_dir = {json.dumps(str(world.state_dir))}\n"
        f"profile_dir = {json.dumps(str(world.base / 'profiles'))}\n"
        "\n[sessions]\nstop_grace = 3.0\nshutdown_grace = 3.0\n"
        "\n[network]\n"
        f"resolve = {{{table}}}\n"
        f"extra_ca_file = {json.dumps(str(world.ca_file))}\n"
    )
    world.config.write_text(text)
    return text


def pick_port(preferred: int) -> int:
    """``preferred`` if 127.0.0.1 has it free, else one the kernel picks."""
    for candidate in (preferred, 0):
        with socket.socket() as probe:
            # As the daemon's listener (trio's) does: connections of an earlier run that
            # linger in TIME_WAIT do not make the port busy.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")
