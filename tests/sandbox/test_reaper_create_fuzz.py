"""``reaper_create.c``'s parser of the view's creation section (``creation_load``: the
guarded directories with their folded names, the writable roots; ``_cinit.creation_section``
writes it) fed valid and mutated sections under AddressSanitizer and UBSan (review17). The
init reads that section only after it has mounted the view, so instead of the binary a small
harness is built from the reaper's own sources, one process for all the cases: each must be
accepted or refused, never crash or trip a sanitizer, and a section laid out as
``creation_section`` writes it must be accepted. The inputs come from a seeded generator
(``NONO_FUZZ_SEED``)."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from nonod.sandbox import _cinit

SOURCES = Path(_cinit.__file__).parent
SEED = int(os.environ.get("NONO_FUZZ_SEED", "20261206"))
CASES = 20000
HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "reaper.h"
int main(void) { /* stdin: cases, each a u32 length and its bytes; stdout: 0 or 1 each */
    unsigned char h[4];
    while (fread(h, 1, 4, stdin) == 4) {
        uint32_t n = h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24;
        unsigned char *buf = malloc(n ? n : 1);
        if (!buf || fread(buf, 1, n, stdin) != n)
            return 2;
        struct reader r = {buf, buf + n};
        struct creation c = {0};
        putchar(creation_load(&r, &c) < 0 ? '1' : '0');
        free(buf);
    }
    return 0;
}
"""


def _str(raw: bytes) -> bytes:
    return struct.pack("<I", len(raw)) + raw


def _valid(rng: random.Random) -> bytes:
    dirs = ["/w" + "/d" * rng.randint(0, 60) for _ in range(rng.randint(1, 5))]
    out = [struct.pack("<I", len(dirs))]
    for d in dirs:
        names = [rng.choice([b".envrc", b"x" * rng.randint(1, 300)])
                 for _ in range(rng.randint(1, 4))]
        out += [_str(d.encode()), struct.pack("<I", len(names)), *map(_str, names)]
    roots = [b"/r" * rng.randint(1, 2100) for _ in range(rng.randint(0, 4))]
    return b"".join([*out, struct.pack("<I", len(roots)), *map(_str, roots)])


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and len(b) >= 4:
            at = rng.randrange(len(b) - 3)
            b[at:at + 4] = struct.pack("<I", rng.choice(
                [0, 1, 4095, 4096, 65536, 0xFFFFFFFF, rng.getrandbits(32)]))
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        else:
            at = rng.randrange(len(b) + 1)
            b[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(b)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("harness")
    (out / "harness.c").write_text(HARNESS)
    sources = [str(SOURCES / f"reaper_{part}.c") for part in ("create", "util", "guard")]
    subprocess.run([cc, "-g", "-O1", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", f"-I{SOURCES}", "-o", str(out / "harness"),
                    str(out / "harness.c"), *sources], check=True)
    return out / "harness"


def _load(harness: Path, cases: list[bytes]) -> bytes:
    data = b"".join(_str(case) for case in cases)
    env = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1"}
    r = subprocess.run([str(harness)], input=data, capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-4000:]
    assert len(r.stdout) == len(cases)
    return r.stdout


def test_valid_sections_are_accepted(harness: Path) -> None:
    rng = random.Random(SEED)
    fit = [c for c in (_valid(rng) for _ in range(200)) if b"/r" * 2048 not in c]
    assert set(_load(harness, fit)) == {ord("0")}
    assert _load(harness, [struct.pack("<II", 0, 0)]) == b"0"  # no guard


def test_mutated_sections_are_accepted_or_refused(harness: Path) -> None:
    rng = random.Random(SEED)
    out = _load(harness, [_mutate(rng, _valid(rng)) for _ in range(CASES)])
    assert set(out) <= {ord("0"), ord("1")}
