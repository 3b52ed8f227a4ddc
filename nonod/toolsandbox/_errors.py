"""What the tool sandbox refuses at launch (``policy.*``: exit 125, as other policy refusals)."""

from __future__ import annotations

from ..errors import PolicyError


class ShimCannotRun(PolicyError):
    """The agent's view cannot run the tool shim (no interpreter there): its tools could not
    be called, so the launch is refused rather than started with tools that fail."""

    code = "policy.tool_shim"
