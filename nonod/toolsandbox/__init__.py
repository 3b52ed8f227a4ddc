"""Per-tool sandboxes (nono's ``command_policies``): a named tool the agent's session runs
is run by the daemon in a child session of its own, with the tool's policy.

The profile side (the section's schema and checks, the child session's profile) lives in
``nonod.profiles`` (``_tools``, ``_toolprofile``); a resolved tool is a
``nonod.policy.ToolPolicy``. Here::

    verdict = decide(invocation_policy, args, env)                # may this call run?

and the daemon side, ``nonod.toolsandbox._broker`` (the per-session socket, the shim pinned
over each tool, launching the child session); the shim itself is
``nonod/toolsandbox/shim.py``. How it fits together: docs/tool-sandboxes.md.
"""

from ..profiles._tools import InvocationPolicy as InvocationPolicy
from ._invocation import Verdict as Verdict
from ._invocation import decide as decide
