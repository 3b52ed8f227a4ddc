"""The names and sizes a trust policy's files are looked for and read by, on their own: every
launch looks for the policies (``_files``), and needs the parser and the verifier
(``_policy``, ``_verify``) only when it finds one."""

from __future__ import annotations

from typing import Final

POLICY_FILE_NAME: Final = "trust-policy.json"
MAX_POLICY_BYTES: Final = 1 << 20
MAX_BUNDLE_BYTES: Final = 1 << 20
"""A bundle larger than this is refused before it is parsed (nono's are under 2 KiB)."""
