"""The sandbox engine: turn a ResolvedPolicy into a confined process.

Public face::

    async with open_launcher() as launcher:          # starts the fork server once
        proc = await launcher.launch(policy, request, stdio=(0, 1, 2))
        proc.pid, proc.enforcement                    # host pid, what each layer did
        status = await proc.wait_exited()             # ExitStatus(code=..., signal=...)
        proc.send_signal(signal.SIGTERM)

    status = await launch_and_wait(policy, request)   # one-shot, for tests and scripts

A launch either returns a running, confined process or raises ``LaunchError`` (the program's
code never ran). See ``_launcher`` for the steps between fork and execve.
"""

from ._api import GuardReport as GuardReport
from ._api import Launcher as Launcher
from ._api import Sandboxed as Sandboxed
from ._api import launch_and_wait as launch_and_wait
from ._api import open_launcher as open_launcher
from ._mode import MODE_SETTINGS as MODE_SETTINGS
from ._mode import adapt_policy as adapt_policy
from ._types import EnforcementReport as EnforcementReport
from ._types import ExitStatus as ExitStatus
from ._types import LaunchRequest as LaunchRequest
from ._types import LayerReport as LayerReport
