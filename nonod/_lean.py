"""What the daemon's and the fork server's entry points keep out of their processes.

Libraries the daemon uses load large modules for a detail it never needs. Each function here
runs before the library is first imported and changes nothing of what the library does for
the daemon; where the module it avoids is loaded already, it changes nothing at all. The
stand-ins exist only while the library is imported: whoever imports the module afterwards,
the library included, gets the real one.
"""

from __future__ import annotations

import importlib
import sys
import types


def keep_out_rich() -> None:
    """structlog imports rich when it is installed (sigstore, a dev extra, brings it; so do
    many system Pythons) for pretty tracebacks and locals, which the daemon never renders
    (plain tracebacks, no locals): 3.5 MiB of the daemon's memory for nothing."""
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]


def import_structlog() -> None:
    """Import structlog without loading asyncio (about 1.5 MiB of the daemon's memory) or
    pickle (about 0.3 MiB).

    structlog uses asyncio only inside its async logging methods (``ainfo``...,
    ``AsyncBoundLogger``), which need a running asyncio loop: the daemon runs on trio and
    never calls them. structlog gets a stand-in that loads the real asyncio on the first use
    of any of its names, so even a call would behave as it does now. Of pickle it takes one
    name, ``PicklingError``, which its loggers raise when asked to be pickled: the stand-in
    has that very class (pickle's own comes from ``_pickle``, a small C module).
    """
    import _pickle

    pickle = _forwarding("pickle")
    pickle.PicklingError = _pickle.PicklingError  # type: ignore[attr-defined]
    _import_with_stand_ins("structlog", {"asyncio": _forwarding("asyncio"), "pickle": pickle})


def import_msgspec() -> None:
    """Import msgspec without ``typing_extensions`` (and ``inspect``, ``ast``, ``dis``,
    ``tokenize`` with it, where nothing else loaded them): msgspec prefers its
    ``get_type_hints`` and falls back to ``typing``'s, which on Python >= 3.11 reads every
    annotation nonod uses (``nonoctl`` has always run so). Only msgspec's import sees it
    missing."""
    _import_with_stand_ins("msgspec", {"typing_extensions": None})


def import_dataclasses() -> None:
    """Import dataclasses without ``inspect`` (and ``ast``, ``dis``, ``tokenize``,
    ``linecache`` with it): about 1 MiB that the fork server would hold and share with every
    warm launcher. dataclasses calls ``inspect.signature`` for one thing only, the docstring
    of a dataclass that has none; the stand-in loads the real ``inspect`` then."""
    _import_with_stand_ins("dataclasses", {"inspect": _forwarding("inspect")})


def import_trio_websocket() -> None:
    """Import trio and trio-websocket (the control server's protocol) without ``ssl``, and
    trio-websocket without ``importlib.metadata``.

    Both import ``ssl`` for TLS streams and contexts, which they use only when asked for one
    (the daemon's TLS is its proxy's, and webhooks', loaded with them): ``ssl`` and the
    start of OpenSSL's TLS library are about 0.6 MiB of the daemon's own memory, and libssl's
    mapped pages (libcrypto stays: ``hashlib`` uses it). Each gets a stand-in that loads
    ``ssl`` on first use.

    trio-websocket asks ``importlib.metadata.version("trio")`` once, as it is imported, to
    learn whether trio predates 0.22. ``importlib.metadata`` brings ``email``, ``zipfile``,
    ``csv`` and a walk of the installed distributions: about 1.5 MiB of the daemon's memory
    for a version that trio carries itself. The stand-in answers that from
    ``trio.__version__`` (any other name loads the real module).
    """
    _import_with_stand_ins("trio", {"ssl": _forwarding("ssl")})
    import trio

    stand_in = _forwarding("importlib.metadata")

    def version(name: str) -> str:
        if name == "trio":
            return str(trio.__version__)
        found: str = _real("importlib.metadata", stand_in).version(name)
        return found

    stand_in.version = version  # type: ignore[attr-defined]
    _import_with_stand_ins("trio_websocket", {"importlib.metadata": stand_in,
                                              "ssl": _forwarding("ssl")})


def import_hashlib() -> None:
    """Import hashlib and hmac on the interpreter's own implementations of their algorithms,
    without ``_hashlib`` and OpenSSL's libcrypto, which it loads and starts (trio imports
    hmac as it is imported, for DTLS cookies): about 3.5 MiB of resident pages in the
    daemon (0.4 of them its own copies), all of it counted as the daemon's on a host where
    no other process maps the library (docs/benchmarks.md, "idle5").

    hashlib then builds sha256, sha1, md5, sha512, blake2 and sha3 from CPython's built-in
    modules: the same digests, slower on long inputs (about 180 MiB/s for sha256 here against
    OpenSSL's 740; a 200-byte record 3 us against 0.4). hmac computes HMAC in Python over
    them and compares digests with ``_operator._compare_digest``, CPython's constant-time
    comparison (OpenSSL's ``CRYPTO_memcmp`` otherwise). ``scrypt``, which only OpenSSL
    has, loads it on first use (``pbkdf2_hmac`` has a Python fallback on 3.11). Whoever
    imports ``_hashlib`` or ``ssl`` afterwards (the proxy's TLS) gets the real library."""
    if "hashlib" in sys.modules or "hmac" in sys.modules:
        return
    _import_with_stand_ins("hashlib", {"_hashlib": None})
    _import_with_stand_ins("hmac", {"_hashlib": None})
    hashlib = sys.modules.get("hashlib")
    if hashlib is not None and not hasattr(hashlib, "scrypt"):
        hashlib.__getattr__ = _from_openssl  # type: ignore[method-assign]


def _from_openssl(name: str) -> object:
    """hashlib's names that only OpenSSL provides, from ``_hashlib`` (loaded now)."""
    if name == "scrypt":
        return getattr(importlib.import_module("_hashlib"), name)
    raise AttributeError(f"module 'hashlib' has no attribute {name!r}")


def _real(name: str, stand_in: types.ModuleType) -> types.ModuleType:
    """The real module ``name`` (loaded now if need be), ``stand_in`` out of the way."""
    if sys.modules.get(name) is stand_in:
        del sys.modules[name]
    return importlib.import_module(name)


def _forwarding(name: str) -> types.ModuleType:
    """A stand-in for module ``name`` that loads the real one when any of its names is used,
    and takes the real one's names then (a library that kept the stand-in reads them as
    plainly as it would from the real module). Module metadata (``__path__``,
    ``__file__``...) it does not have: the import system asks for it when the stand-in is
    imported, and must not load the module then."""
    stand_in = types.ModuleType(name)

    def forward(attribute: str) -> object:
        if attribute.startswith("__") and attribute.endswith("__"):
            raise AttributeError(f"module {name!r} (not loaded yet) has no {attribute!r}")
        real = _real(name, stand_in)
        for key, value in vars(real).items():
            if not (key.startswith("__") and key.endswith("__")):
                setattr(stand_in, key, value)
        return getattr(real, attribute)

    stand_in.__getattr__ = forward  # type: ignore[method-assign]
    return stand_in


def _import_with_stand_ins(name: str, stand_ins: dict[str, types.ModuleType | None]) -> None:
    """Import ``name`` while each module of ``stand_ins`` that is not loaded yet is the given
    stand-in (None: missing); the stand-ins are gone from ``sys.modules`` afterwards."""
    if name in sys.modules or any(module in sys.modules for module in stand_ins):
        return
    sys.modules.update(stand_ins)  # type: ignore[arg-type]
    try:
        importlib.import_module(name)
    finally:
        for module, stand_in in stand_ins.items():
            if module in sys.modules and sys.modules[module] is stand_in:
                del sys.modules[module]
