"""Profiles: nono's profile JSON, parsed strictly and resolved into a ResolvedPolicy.

Public face::

    profile = load_profile("gitbot", user_dir=user_profiles_dir(home))   # or a path
    ctx = ResolveContext(home=home, workdir=cwd, uid=uid)
    policy = resolve(profile, ctx, overrides=CliOverrides(allow_cwd=True))

``parse_profile(data, source)`` checks one file without looking anything up;
``list_profiles(user_dir)`` names what ``load_profile`` can find; ``builtin_groups()`` is the
catalogue of policy groups. Every error is a ``ProfileError`` (or ``PolicyError`` for what the
overrides or the machine get wrong). The format, and where nonod differs from nono, is in
``docs/profiles.md``.
"""

from ._expand import ResolveContext as ResolveContext
from ._fslook import FsLook as FsLook
from ._groups import GroupCatalog as GroupCatalog
from ._groups import GroupEntry as GroupEntry
from ._groups import PolicyGroup as PolicyGroup
from ._groups import builtin_groups as builtin_groups
from ._groups import builtin_network as builtin_network
from ._load import MAX_PROFILE_BYTES as MAX_PROFILE_BYTES
from ._load import ProfileInfo as ProfileInfo
from ._load import builtin_profiles_dir as builtin_profiles_dir
from ._load import list_profiles as list_profiles
from ._load import load_profile as load_profile
from ._load import parse_profile as parse_profile
from ._load import user_profiles_dir as user_profiles_dir
from ._owner import ProfileWritable as ProfileWritable
from ._owner import check_writers as check_writers
from ._resolve import CliOverrides as CliOverrides
from ._resolve import resolve as resolve
from ._schema import Profile as Profile
