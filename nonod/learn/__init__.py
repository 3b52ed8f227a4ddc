"""Learn: run a program under observation and propose the profile it needs.

Public face::

    result = await learn(["python3", "bot.py"], cwd=workdir, env=client_env, timeout=60,
                         base_profile=None, listen_ports=(5001,), progress=show,
                         resolver=operator_resolver())   # nonod.toml's [network] pins
    result.to_nono_json()          # nono's `learn --json` shape
    result.to_profile("gitbot")    # a complete profile, nono's format
    result.summary_lines()         # for people
    result.diff_against(resolved)  # only what a base policy lacks

The program runs inside a recording session (everything visible except what no session may
see; the network only through a recording proxy) with strace as its parent; the trace and the
proxy's notes are folded into grants by the rule in ``_fold``. ``docs/learn.md`` explains the
design and its limits.
"""

from ._fold import FOLD_MIN_ENTRIES as FOLD_MIN_ENTRIES
from ._fold import Covered as Covered
from ._fold import DeniedTouch as DeniedTouch
from ._fold import ProposedGrant as ProposedGrant
from ._fold import Skipped as Skipped
from ._network import DirectAddress as DirectAddress
from ._network import OutboundHost as OutboundHost
from ._network import RefusedTarget as RefusedTarget
from ._network import operator_resolver as operator_resolver
from ._propose import LearnProgress as LearnProgress
from ._propose import LearnResult as LearnResult
from ._propose import ListeningPort as ListeningPort
from ._run import LearnError as LearnError
from ._run import find_strace as find_strace
from ._run import learn as learn
from ._run import recording_policy as recording_policy
