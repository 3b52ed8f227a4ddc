"""gitbot: a small GitHub issue-triage webhook bot, in the spirit of the seed blog post.

Standard library only. It receives ``issues.opened`` webhooks, checks their HMAC signature,
reads ``GEMINI.md`` (its system prompt), asks Gemini for a label and a comment, and posts
both to GitHub. It talks to the APIs through ``GEMINI_BASE_URL`` / ``GITHUB_BASE_URL`` when
they are set (nono's credential proxy) and directly otherwise; its API keys are whatever is
in ``GEMINI``/``GEMINI_API_KEY`` and ``GITHUB_TOKEN`` (under nono: phantom tokens).

Two debug endpoints show what the sandbox does: ``/debug/read-ssh`` tries to read
``~/.ssh/id_ed25519`` (403 under nono) and ``/debug/show-token`` shows the first and last
characters of the GitHub token the process sees.
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
        if self.path == "/debug/read-ssh":
            try:
                Path.home().joinpath(".ssh", "id_ed25519").read_bytes()
            except OSError as exc:
                self._reply(403, {"read_ssh": "denied", "error": exc.strerror})
            else:
                self._reply(200, {"read_ssh": "READ THE PRIVATE KEY"})
        elif self.path == "/debug/show-token":
            token = _env("GITHUB_TOKEN")
            shown = f"{token[:4]}...{token[-4:]}" if len(token) > 8 else "(none)"
            self._reply(200, {"token_seen_by_process": shown})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(min(length, 1 << 20))
        secret = _env("WEBHOOK_SECRET").encode()
        expected = "sha256=" + hmac.new(secret, payload, hashlib.sha256).hexdigest()
        if not secret or not hmac.compare_digest(expected,
                                                 self.headers.get("X-Hub-Signature-256", "")):
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
        try:
            decision = triage(issue)
            post_to_github(repo, int(issue["number"]), decision)
        except Exception as exc:
            self._reply(502, {"error": type(exc).__name__, "detail": str(exc)[:200]})
            return
        self._reply(200, {"triaged": issue["number"], **decision})


def main() -> None:
    port = int(os.environ.get("PORT", "5001"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    sys.stderr.write(f"gitbot: listening on 127.0.0.1:{port}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
