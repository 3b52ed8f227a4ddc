"""What the program holds never reaches its audit record verbatim (see nonod/audit/_mask)."""

from __future__ import annotations

from nonod.audit import FsDenied, Network, SessionStarted
from nonod.audit._mask import PHANTOM, REDACTED, hidden_strings, masked

TOKEN = "ab" * 32
SECRET = "s3cr3t-value-from-env"


def test_text_fields_and_lists_are_masked() -> None:
    hidden = hidden_strings(TOKEN, (SECRET,))
    event = Network(mode="http", decision="deny", host="evil.example", port=80,
                    reason="host_not_allowed", path=f"/leak/{TOKEN}/{SECRET}")
    assert masked(event, hidden).path == f"/leak/{PHANTOM}/{REDACTED}"
    started = SessionStarted(session="s1", argv=("tool", f"upload/{SECRET}"), cwd="/w", uid=1,
                             policy_digest="0" * 64)
    assert masked(started, hidden).argv == ("tool", f"upload/{REDACTED}")


def test_nothing_to_mask_returns_the_same_object() -> None:
    event = FsDenied(path="/etc/shadow", operation="read")
    assert masked(event, hidden_strings(TOKEN)) is event
    assert masked(event, {}) is event


def test_short_values_are_not_masked_everywhere() -> None:
    assert hidden_strings("abc", ("xy", SECRET)) == {SECRET: REDACTED}
