"""The reflected-secret scrubber alone: MB/s of ``Scrubber.feed`` over a streamed body.

One secret (40 characters) and the session's phantom token make the needle table
(``scrub_replacements``); a body of --size bytes is fed in --chunk byte pieces (default 16 KiB,
a TLS record), --runs times, and the median rate is printed for three kinds of body:

  zeros  what bench/reverse.py streams (no byte can begin a needle)
  text   JSON-like ASCII with many hex digits, ``%`` and ``\\`` (bytes that do begin needles)
  echo   the text body with the secret reflected, in every covered form, every 4 KiB

    .venv/bin/python bench/scrub.py [--size BYTES] [--chunk BYTES] [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from nonod.credentials import PhantomToken, Scrubber, Secret, scrub_replacements

CHUNK = 1 << 14
SECRET = "sk-bench_0123456789abcdefABCDEF/+=xyzXYZ"  # noqa: S105 - a benchmark value


def _bodies(size: int, table: dict[bytes, bytes]) -> dict[str, bytes]:
    rng = random.Random(1)  # noqa: S311 - a reproducible benchmark body, not a secret
    alphabet = b'0123456789abcdef{}":, %\\uABCDEFxyz\n'
    text = bytes(rng.choice(alphabet) for _ in range(1 << 16))
    text = (text * (size // len(text) + 1))[:size]
    forms = list(table)
    pieces = []
    for i in range(0, size, 4096):
        pieces.append(text[i:i + 4096])
        pieces.append(forms[(i // 4096) % len(forms)])
    return {"zeros": b"\0" * size, "text": text, "echo": b"".join(pieces)[:size]}


def _rate(scrubber: Scrubber, body: bytes, chunk: int = CHUNK) -> float:
    view = memoryview(body)
    start = time.perf_counter()
    for offset in range(0, len(body), chunk):
        scrubber.feed(view[offset:offset + chunk])
    scrubber.flush()
    return len(body) / (time.perf_counter() - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=50_000_000)
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = scrub_replacements(Secret(SECRET), PhantomToken("f" * 64))
    scrubber = Scrubber(table)
    rates = {name: statistics.median(_rate(scrubber.fresh(), body, args.chunk)
                                     for _ in range(args.runs))
             for name, body in _bodies(args.size, table).items()}
    if args.json:
        print(json.dumps({"needles": len(table), **rates}))
        return
    print(f"needles={len(table)} size={args.size} runs={args.runs}")
    print("| body | MB/s (median) |\n|---|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} |")


if __name__ == "__main__":
    main()
