"""Per-tool sandboxes (nono's ``command_policies``): a named tool the agent's session runs
is run by the daemon in a child session of its own, with the tool's policy.

Public face (profile side, light to import)::

    section = decode_section(profile.command_policies, source)   # checked, or None
    verdict = decide(invocation_policy, args, env)                # may this call run?

The daemon side (the per-session socket, the shim, launching the child) is
``nonod.toolsandbox._broker``; the shim the agent's view runs in place of each tool is
``nonod/toolsandbox/shim.py``. How it fits together: docs/tool-sandboxes.md.
"""

from ._child import child_profile as child_profile
from ._child import find_executable as find_executable
from ._invocation import Verdict as Verdict
from ._invocation import decide as decide
from ._schema import CommandPolicies as CommandPolicies
from ._schema import InvocationPolicy as InvocationPolicy
from ._schema import decode_section as decode_section
