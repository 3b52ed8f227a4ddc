"""The reflected-secret scrubber alone: MB/s of ``Scrubber.feed`` over a streamed body.

One secret (40 characters) and the session's phantom token make the needle table
(``scrub_replacements``); a body of --size bytes is fed in --chunk byte pieces (default 1 MiB,
what the proxy's worker reads at a time into a ``bytearray``, fed with ``feed_part``), --runs
times, and the median rate is printed for four kinds of body:

  zeros  what bench/reverse.py streams (no byte can begin a needle)
  text   JSON-like ASCII with many hex digits, ``%`` and ``\\`` (bytes that do begin needles)
  random random bytes (compressed or encrypted data)
  echo   the text body with the secret reflected, in every covered form, every 4 KiB

With --before DIR, the ``Scrubber`` of the tree in DIR (its ``nonod/credentials/_scrub.py``)
is timed too, in the same process, the two taking turns run by run.

    .venv/bin/python bench/scrub.py [--size BYTES] [--chunk BYTES] [--runs N] [--before DIR]
                                    [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import time
from typing import Any

from nonod.credentials import PhantomToken, Scrubber, Secret, scrub_replacements

CHUNK = 1 << 20
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
    return {"zeros": b"\0" * size, "text": text, "random": rng.randbytes(size),
            "echo": b"".join(pieces)[:size]}


def _rate(scrubber: Any, chunks: list[bytearray]) -> float:
    start = time.perf_counter()
    for chunk in chunks:
        scrubber.feed_part(chunk, len(chunk))
    scrubber.flush()
    return sum(map(len, chunks)) / (time.perf_counter() - start) / 1e6


def _scrubber_from(tree: str) -> Any:
    """The ``Scrubber`` class of another source tree (its module loaded beside ours)."""
    path = os.path.join(tree, "nonod", "credentials", "_scrub.py")
    spec = importlib.util.spec_from_file_location("nonod.credentials._scrub_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Scrubber


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=50_000_000)
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", metavar="DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = scrub_replacements(Secret(SECRET), PhantomToken("f" * 64))
    contenders = {"after": Scrubber(table)}
    if args.before:
        contenders["before"] = _scrubber_from(args.before)(table)
    rates: dict[str, dict[str, float]] = {}
    for name, body in _bodies(args.size, table).items():
        chunks = [bytearray(body[i:i + args.chunk]) for i in range(0, len(body), args.chunk)]
        runs: dict[str, list[float]] = {who: [] for who in contenders}
        for run in range(args.runs):
            # Who goes first changes every run: the second of a pair read the body faster
            # here (zeros: 2-15 GB/s by the order alone, either scrubber).
            order = list(contenders.items())
            for who, scrubber in order[::-1] if run % 2 else order:
                runs[who].append(_rate(scrubber.fresh(), chunks))
        rates[name] = {who: statistics.median(r) for who, r in runs.items()}
    if args.json:
        print(json.dumps({"needles": len(table), "chunk": args.chunk, **rates}))
        return
    print(f"needles={len(table)} size={args.size} chunk={args.chunk} runs={args.runs}")
    print("| body | " + " | ".join(f"{who} MB/s (median)" for who in contenders) + " |")
    print("|---|" + "---:|" * len(contenders))
    for name, by in rates.items():
        print(f"| {name} | " + " | ".join(f"{rate:.0f}" for rate in by.values()) + " |")


if __name__ == "__main__":
    main()
