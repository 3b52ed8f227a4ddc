"""The profile resolutions' cache (``nonod._profile_source.ResolutionCache``) is used from
many worker threads at once, and checks an entry's file system looks outside its lock (they
may take a while: a caller's slow or hung file system). Another thread may drop or replace
that entry meanwhile: the check's thread must not fail for it. (It did: ``KeyError`` in
``move_to_end``, an internal error that ended the caller's control connection, seen when 40
requests of one user for the same resolution met a file system that had stopped answering.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from nonod._profile_source import ResolutionCache
from nonod.policy import ResolvedPolicy
from nonod.profiles._fslook import FsLook


class _HeldLook(FsLook):
    """Looks that hold their check until released (a file system slow to answer)."""

    def __init__(self, *, holds: bool) -> None:
        super().__init__()
        self.holds = holds
        self.checking, self.release = threading.Event(), threading.Event()

    def unchanged(self) -> bool:
        self.checking.set()
        assert self.release.wait(30)
        return self.holds


def _policy(name: str) -> ResolvedPolicy:
    return ResolvedPolicy(name=name, grants=(), denials=())


def _get_while(cache: ResolutionCache, key: bytes, look: _HeldLook,
               meanwhile: Callable[[], None]) -> ResolvedPolicy | None:
    """``cache.get(key)`` in a thread, ``meanwhile`` done here while ``look`` is checked."""
    got: list[ResolvedPolicy | BaseException | None] = []

    def get() -> None:
        try:
            got.append(cache.get(key))
        except BaseException as exc:  # reported below, in the test's own thread
            got.append(exc)

    thread = threading.Thread(target=get)
    thread.start()
    assert look.checking.wait(30)
    meanwhile()
    look.release.set()
    thread.join(30)
    (result,) = got
    assert not isinstance(result, BaseException), repr(result)
    return result


def test_an_entry_evicted_while_its_looks_are_checked_is_still_a_hit() -> None:
    cache = ResolutionCache(size=1)
    look = _HeldLook(holds=True)
    cache.put(b"mine", _policy("mine"), look)
    got = _get_while(cache, b"mine", look,
                     lambda: cache.put(b"other", _policy("other"), FsLook()))
    assert got is not None and got.name == "mine"
    assert cache.hits == 1


def test_a_stale_check_does_not_drop_the_entry_another_thread_put_meanwhile() -> None:
    cache = ResolutionCache()
    look = _HeldLook(holds=False)
    cache.put(b"mine", _policy("old"), look)
    fresh = FsLook()
    got = _get_while(cache, b"mine", look,
                     lambda: cache.put(b"mine", _policy("new"), fresh))
    assert got is None
    again = cache.get(b"mine")  # the newer entry, put while the old one was checked
    assert again is not None and again.name == "new"
