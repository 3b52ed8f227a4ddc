"""The demo's Secret Service: gnome-keyring on a private D-Bus session bus.

``dbus-run-session`` starts a bus that lives as long as the command it runs. That command
unlocks gnome-keyring with a throw-away password (which creates an empty login keyring in
the demo's own keyring home), prints the bus address, then waits for its stdin to close. The
demo holds the other end of that pipe, so the bus, and the keyring with it, end when the demo
closes it or dies in any way; the process group is also signalled on the way out.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from ._demo_report import DemoError

TOOLS: Final = ("dbus-run-session", "gnome-keyring-daemon", "secret-tool")
APT_PACKAGES: Final = "dbus gnome-keyring libsecret-tools"

# Run by dbus-run-session: a fixed script, the password in the environment (never argv).
_SCRIPT: Final = (
    'printf %s "$DEMO_KEYRING_PASSWORD" | gnome-keyring-daemon --unlock '
    '--components=secrets >/dev/null || exit 1\n'
    'unset DEMO_KEYRING_PASSWORD\n'
    'printf "%s\\n" "$DBUS_SESSION_BUS_ADDRESS"\n'
    'exec cat >/dev/null\n'
)


class KeyringError(DemoError):
    """The private Secret Service could not be started or used."""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True)
class SecretService:
    """A running keyring: ``env`` is what a process needs to reach it."""

    env: dict[str, str]

    @property
    def address(self) -> str:
        return self.env["DBUS_SESSION_BUS_ADDRESS"]

    async def store(self, name: str, value: str) -> list[str]:
        """Store ``value`` as nono's docs say (``secret-tool store``, value on stdin); the
        command line, as a list, for showing."""
        argv = ["secret-tool", "store", "--label", f"nono: {name}",
                "service", "nono", "username", name, "target", "default"]
        with trio.fail_after(30):
            done = await trio.run_process(argv, stdin=value.encode(), env=self.env, check=False,
                                          capture_stdout=True, capture_stderr=True)
        if done.returncode != 0:
            raise KeyringError(f"secret-tool store {name} failed (exit {done.returncode}): "
                               f"{done.stderr.decode(errors='replace').strip()}")
        return argv


@asynccontextmanager
async def open_secret_service(home: Path) -> AsyncIterator[SecretService]:
    """Start the keyring with its files under ``home``; stop it (and its bus) on exit."""
    runtime = home / "run"
    runtime.mkdir(mode=0o700, parents=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_RUNTIME_DIR": str(runtime),
        "LANG": "C.UTF-8",
    }
    log = home / "keyring.log"
    with open(log, "wb") as sink:  # the child has its own copy of the descriptor
        process = await trio.lowlevel.open_process(
            ["dbus-run-session", "--", "sh", "-c", _SCRIPT],
            env={**env, "DEMO_KEYRING_PASSWORD": secrets.token_hex(16)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sink,
            start_new_session=True,
        )
    try:
        address = ""
        with trio.move_on_after(20):
            address = await _read_line(process.stdout) if process.stdout else ""
        if not address.startswith(("unix:", "tcp:")):
            said = log.read_text(errors="replace").strip()[-2000:]
            raise KeyringError("gnome-keyring did not start on the private session bus"
                               + (f"; it said:\n{said}" if said else ""))
        yield SecretService(env={**env, "DBUS_SESSION_BUS_ADDRESS": address})
    finally:
        with trio.CancelScope(shield=True):
            await _end_group(process)


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


async def _end_group(process: trio.Process) -> None:
    """Close the keep-alive pipe, then SIGTERM the group, wait, SIGKILL if need be."""
    if process.stdin is not None:
        await process.stdin.aclose()
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass  # the group is already gone
        with trio.move_on_after(grace):
            await process.wait()
            return
