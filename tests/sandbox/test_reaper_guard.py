"""``nono-reaper``'s creation guard (``reaper_guard.c``) under hostile arguments: every probe
first waits until the init has become the reaper, so the C code, not the Python supervisor,
reads the program's memory and decides. Run them with the sanitized build too:
``make reaper-asan`` and ``NONO_REAPER_BINARY=$PWD/nonod/sandbox/nono-reaper-asan``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import SandboxUser
from .test_createguard import AFTER_REAPER, run_in
from .test_createguard import layout as layout  # the fixture

pytestmark = pytest.mark.userns

OPENAT = {"x86_64": 257, "aarch64": 56}[os.uname().machine]

# Raw calls on addresses the probe chooses, and a page followed by an unmapped one.
RAW = AFTER_REAPER + (
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "libc.mmap.restype = ctypes.c_void_p\n"
    "libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,"
    " ctypes.c_int, ctypes.c_long)\n"
    "page = libc.mmap(None, 8192, 3, 0x22, -1, 0)\n"  # PROT_READ|WRITE, PRIVATE|ANONYMOUS
    "assert libc.munmap(ctypes.c_void_p(page + 4096), 4096) == 0\n"
    "def call(nr, *args):\n"
    "    r = libc.syscall(nr, *args)\n"
    "    if r < 0: raise OSError(ctypes.get_errno(), str(nr))\n"
    "    return 0\n"
    "def at_end(data):\n"  # data ends on the last byte of the mapped page
    "    addr = page + 4096 - len(data)\n"
    "    ctypes.memmove(addr, data, len(data))\n"
    "    return ctypes.c_void_p(addr)\n"
    "def create(addr):\n"
    f"    return call({OPENAT}, -100, addr, 0o101 | os.O_CLOEXEC, 0o644)\n"
    "def openat2(path, how, size):\n"
    "    return call(437, -100, path, how, ctypes.c_size_t(size))\n"
)


def _path(length: int, name: str) -> str:
    """A relative path of exactly ``length`` bytes naming ``name`` in the working directory."""
    pad = length - len(name)
    return "./" * (pad // 2) + "/" * (pad % 2) + name


def test_paths_around_path_max(sandbox_user: SandboxUser, world_tmp: Path,
                               layout: tuple[Path, Path]) -> None:
    """PATH_MAX - 1 bytes is a path (created, or refused for a refused name); PATH_MAX and
    more are the kernel's ENAMETOOLONG."""
    home, work = layout
    code = AFTER_REAPER + "".join(
        f"t(lambda: os.close(os.open({_path(n, name)!r}, os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        for n, name in ((4095, "okfile"), (4095, ".envrc"), (4096, "toolong"),
                        (4097, "toolong")))
    code += f"t(lambda: os.mkdir({_path(4095, 'okdir')!r}))\n"
    assert run_in(sandbox_user, home, work, code) == [
        "OK ", "EACCES", "ENAMETOOLONG", "ENAMETOOLONG", "OK "]
    assert (work / "okfile").is_file() and (work / "okdir").is_dir()
    assert not (work / ".envrc").exists() and not (work / "toolong").exists()


def test_strings_and_open_how_at_the_edge_of_mapped_memory(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """A name whose NUL is the page's last byte is read whole; one that runs into the
    unmapped page, or starts there, is the kernel's EFAULT; so is an open_how that does."""
    home, work = layout
    how = "(0o101).to_bytes(8, 'little') + (0o644).to_bytes(8, 'little') + bytes(8)"
    out = run_in(sandbox_user, home, work, RAW + (
        "t(lambda: create(at_end(b'edge\\0')))\n"
        "t(lambda: create(at_end(b'cross')))\n"
        "t(lambda: create(ctypes.c_void_p(page + 4096)))\n"
        f"t(lambda: openat2(b'how', at_end(({how})[:16]), 24))\n"
        "t(lambda: open('after', 'w').write('x'))\n"
    ))
    assert out == ["OK 0", "EFAULT", "EFAULT", "EFAULT", "OK 1"]
    assert (work / "edge").is_file() and not (work / "how").exists()


def test_openat2_sizes(sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """The reaper reads at most a page of open_how and emulates only what it understands;
    the kernel answers the rest (EINVAL below the first version, E2BIG past a page or with
    unknown fields set)."""
    home, work = layout
    sizes = {"s0": 0, "s23": 23, "s24": 24, "s32": 32, "s32x": 32, "s4096": 4096,
             "s4097": 4097, "s2p40": 1 << 40, "smax": (1 << 64) - 1}
    code = RAW + (
        "how = ctypes.create_string_buffer((0o101).to_bytes(8, 'little')"
        " + (0o644).to_bytes(8, 'little'), 8192)\n"
    )
    for name, size in sizes.items():
        if name == "s32x":
            code += "how[31] = b'\\x01'\n"
        code += f"t(lambda: openat2({name.encode()!r}, how, {size}))\n"
        if name == "s32x":
            code += "how[31] = b'\\x00'\n"
    out = run_in(sandbox_user, home, work, code)
    assert out == ["EINVAL", "EINVAL", "OK 0", "OK 0", "E2BIG", "OK 0", "E2BIG", "E2BIG",
                   "E2BIG"]
    assert sorted(p.name for p in work.iterdir() if p.name.startswith("s")) == [
        "s24", "s32", "s4096", "src"]


def test_names_that_are_not_utf8_or_fold_to_a_refused_one(
        sandbox_user: SandboxUser, layout: tuple[Path, Path]) -> None:
    """What folds to a refused name is refused; bytes that are not UTF-8, overlong forms
    included, name another file (Python's supervisor decodes them to surrogates), as the
    file system sees them: created."""
    home, work = layout
    names = {
        ".Vscode": "EACCES",
        ".pre-commit-con\ufb01g.yaml": "EACCES",  # LATIN SMALL LIGATURE FI
        ".git\u0131thub": "OK ",  # DOTLESS I folds to itself
        b"\xc0\xaeenvrc": "OK ",  # an overlong "."
        b".env\xc0\x80rc": "OK ",  # an overlong NUL
        b"\xe0\x80\xae\x65nvrc": "OK ",  # a three-byte overlong "."
        b"\xed\xa0\x80.envrc": "OK ",  # an encoded surrogate
        b"\xf4\x90\x80\x80.envrc": "OK ",  # past U+10FFFF
    }
    code = AFTER_REAPER + "".join(
        f"t(lambda: os.close(os.open({name!r}, os.O_CREAT | os.O_WRONLY, 0o644)))\n"
        for name in names)
    assert run_in(sandbox_user, home, work, code) == list(names.values())
    made = set(os.listdir(os.fsencode(work)))
    for name, result in names.items():
        raw = name if isinstance(name, bytes) else name.encode()
        assert (raw in made) == (result == "OK "), name
    assert not (work / ".envrc").exists()


def test_creations_from_many_threads_at_once(sandbox_user: SandboxUser,
                                             layout: tuple[Path, Path]) -> None:
    """Sixteen threads create at once, each its own names and the refused one: every call
    is answered, the allowed names are made, the refused one never is."""
    home, work = layout
    out = run_in(sandbox_user, home, work, AFTER_REAPER + (
        "import threading\n"
        "results = []\n"
        "def work(i):\n"
        "    for j in range(40):\n"
        "        os.close(os.open(f'f{i}-{j}', os.O_CREAT | os.O_WRONLY, 0o644))\n"
        "        os.mkdir(f'd{i}-{j}')\n"
        "        try:\n"
        "            os.close(os.open('.envrc', os.O_CREAT | os.O_WRONLY, 0o644))\n"
        "            results.append('made')\n"
        "        except PermissionError:\n"
        "            results.append('refused')\n"
        "threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]\n"
        "for th in threads: th.start()\n"
        "for th in threads: th.join()\n"
        "print(results.count('refused'), results.count('made'))\n"
    ))
    assert out == ["640 0"]
    names = {p.name for p in work.iterdir()}
    assert {f"f{i}-{j}" for i in range(16) for j in range(40)} <= names
    assert {f"d{i}-{j}" for i in range(16) for j in range(40)} <= names
    assert ".envrc" not in names
