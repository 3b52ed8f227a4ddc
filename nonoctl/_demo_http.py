"""The demo's HTTP client for the bot: plain ``urllib`` in a worker thread.

Requests go straight to the bot's port on this machine's loopback, never through a proxy the
host's environment may name. Error statuses are answers (a ``Reply``), not exceptions.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> dict[str, object]:
        """The body as a JSON object; {} if it is not one."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def text(self) -> str:
        return self.body.decode(errors="replace")


def _request(url: str, data: bytes | None, headers: dict[str, str]) -> Reply:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, headers=headers,  # noqa: S310 (http://)
                                     method="POST" if data is not None else "GET")
    try:
        with opener.open(request, timeout=30) as response:
            return Reply(response.status, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, exc.read())


async def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None
                ) -> Reply:
    """GET ``url``, or POST ``data`` to it."""
    return await trio.to_thread.run_sync(_request, url, data, headers or {})


async def wait_answers(url: str, timeout: float = 20) -> bool:
    """Until something answers HTTP at ``url`` (a forwarded port may accept before the
    program behind it listens); False after ``timeout``."""
    with trio.move_on_after(timeout):
        while True:
            try:
                await fetch(url)
                return True
            except (OSError, http.client.HTTPException):
                await trio.sleep(0.1)
    return False
