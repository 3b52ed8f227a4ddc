"""gitbot: a small GitHub issue-triage webhook bot, in the spirit of the seed blog post.

Standard library only. It receives ``issues.opened`` webhooks, checks their HMAC signature,
reads ``GEMINI.md`` (its system prompt), asks Gemini for a label and a comment, and posts
both to GitHub. It talks to the APIs through ``GEMINI_BASE_URL`` / ``GITHUB_BASE_URL`` when
they are set (nono's credential proxy) and directly otherwise; its API keys are whatever is
in ``GEMINI``/``GEMINI_API_KEY`` and ``GITHUB_TOKEN`` (under nono: phantom tokens).

Settings that are not API keys (``WEBHOOK_SECRET``, ``GITHUB_REPO``, ``PORT``,
``GITBOT_DEBUG``) may also come from a ``.env`` file next to this one, as in the seed: a
variable already in the environment wins over the file.

Three debug endpoints show what the sandbox does. They are on, as in the seed, unless
``GITBOT_DEBUG=0``; turn them off where anyone else can reach the port, since they describe
the process:

- ``/debug/read-ssh`` tries to read ``~/.ssh/id_ed25519``: 403 under nono, 200 without it;
- ``/debug/show-token`` gives the GitHub token the process sees (under nono: its phantom token,
  worthless outside the session), shortened as in the seed and in full;
- ``/debug/environ`` gives the environment a compromised dependency would read (the webhook
  secret shown only as set), where under nono only phantom tokens stand for API keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
GEMINI_DIRECT = "https://generativelanguage.googleapis.com"
GITHUB_DIRECT = "https://api.github.com"
MODEL = "gemini-2.5-flash"


def load_dotenv(path: Path) -> None:
    """``KEY=VALUE`` lines (``#`` comments, optional quotes) into ``os.environ``, unless set."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key and not key.startswith("#"):
            os.environ.setdefault(key.strip(), value.strip().strip("'\""))


def _env(*names: str) -> str:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return ""


def _post_json(url: str, body: object, headers: dict[str, str]) -> object:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=20) as resp:
        return json.loads(resp.read() or b"null")


def triage(issue: dict[str, object]) -> dict[str, str]:
    """Ask Gemini for {"label": ..., "comment": ...}."""
    prompt = (HERE / "GEMINI.md").read_text()
    base = os.environ.get("GEMINI_BASE_URL", GEMINI_DIRECT).rstrip("/")
    url = f"{base}/v1beta/models/{MODEL}:generateContent"
    body = {
        "systemInstruction": {"parts": [{"text": prompt}]},
        "contents": [{"parts": [{"text": f"Title: {issue.get('title')}\n\n{issue.get('body')}"}]}],
    }
    answer = _post_json(url, body, {"x-goog-api-key": _env("GEMINI", "GEMINI_API_KEY")})
    text = answer["candidates"][0]["content"]["parts"][0]["text"]  # type: ignore[index]
    decision = json.loads(text)
    return {"label": str(decision["label"]), "comment": str(decision["comment"])}


def post_to_github(repo: str, number: int, decision: dict[str, str]) -> None:
    base = os.environ.get("GITHUB_BASE_URL", GITHUB_DIRECT).rstrip("/")
    auth = {"Authorization": f"Bearer {_env('GITHUB_TOKEN')}",
            "Accept": "application/vnd.github+json"}
    _post_json(f"{base}/repos/{repo}/issues/{number}/labels", {"labels": [decision["label"]]},
               auth)
    _post_json(f"{base}/repos/{repo}/issues/{number}/comments", {"body": decision["comment"]},
               auth)


class Handler(BaseHTTPRequestHandler):
    server_version = "gitbot/1"

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("gitbot: " + (format % args) + "\n")

    def do_GET(self) -> None:
        if not self.path.startswith("/debug/") or _env("GITBOT_DEBUG") == "0":
            self._reply(404, {"error": "not found"})
        elif self.path == "/debug/read-ssh":
            try:
                Path.home().joinpath(".ssh", "id_ed25519").read_bytes()
            except OSError as exc:
                self._reply(403, {"read_ssh": "denied", "error": exc.strerror})
            else:
                self._reply(200, {"read_ssh": "READ THE PRIVATE KEY"})
        elif self.path == "/debug/show-token":
            token = _env("GITHUB_TOKEN")
            shown = f"{token[:4]}...{token[-4:]}" if len(token) > 8 else "(none)"
            self._reply(200, {"token_seen_by_process": shown, "token": token})
        elif self.path == "/debug/environ":
            seen = {k: ("(set)" if k == "WEBHOOK_SECRET" else v) for k, v in os.environ.items()}
            self._reply(200, seen)
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            self._reply(400, {"error": "bad Content-Length"})
            return
        payload = self.rfile.read(min(int(length), 1 << 20))
        secret = _env("WEBHOOK_SECRET").encode()
        expected = b"sha256=" + hmac.new(secret, payload, hashlib.sha256).hexdigest().encode()
        received = self.headers.get("X-Hub-Signature-256", "").encode(errors="replace")
        if not secret or not hmac.compare_digest(expected, received):
            self._reply(401, {"error": "bad signature"})
            return
        if self.headers.get("X-GitHub-Event") != "issues":
            self._reply(202, {"ignored": True})
            return
        event = json.loads(payload)
        if event.get("action") != "opened":
            self._reply(202, {"ignored": True})
            return
        issue, repo = event["issue"], event["repository"]["full_name"]
        if _env("GITHUB_REPO") and repo != _env("GITHUB_REPO"):
            self._reply(202, {"ignored": "another repository"})
            return
        try:
            decision = triage(issue)
            post_to_github(repo, int(issue["number"]), decision)
        except Exception as exc:
            # The reason goes to the log, not to the caller (it may quote an upstream).
            sys.stderr.write(f"gitbot: triage of #{issue.get('number')} failed: {exc!r}\n")
            self._reply(502, {"error": type(exc).__name__})
            return
        self._reply(200, {"triaged": issue["number"], **decision})


def main() -> None:
    load_dotenv(HERE / ".env")
    port = int(os.environ.get("PORT", "5001"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    sys.stderr.write(f"gitbot: listening on 127.0.0.1:{port}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
