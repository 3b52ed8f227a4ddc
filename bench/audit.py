"""Audit throughput: events per second into the writer, with live subscribers draining.

Measured in one run, each on a fresh session file under a temporary state directory:

  chain-only    Chain.append (encode + hash, no I/O): the ceiling
  writer        AuditWriter.append, no subscribers, the fsync task running (defaults:
                every 1 s or 1000 events, in a worker thread)
  proxy-path    what a proxied request pays per record: the proxy's ``NetworkEvent``
                converted by the session (``_audit_event``), then ``AuditWriter.append``,
                no subscribers (as ``bench/audit_proxy.py``'s daemon does)
  writer+10sub  the same with 10 subscribers (buffer 256) draining in their own tasks with
                ``receive_batch``; the producer checkpoints after every event, as a session
                doing other work between events would
  writer+10sub/64  the same, checkpointing every 64 events (bursts)
  writer+10sub 1by1  as writer+10sub, but subscribers read one item per ``receive`` instead
                of ``receive_batch`` (each read costs a scheduling round)
  verify        verify_session_file over the sealed writer+10sub file, lines per second

For the writer runs the per-append latency (the time an audited proxied request spends in
``append``: encode, hash, write, publish to 10 subscribers) is reported as p50/p99/max.

    .venv/bin/python bench/audit.py [--events 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nonod.audit import (
    Network,
    SessionEnded,
    SessionStarted,
    verify_session_file,
)
from nonod.audit._chain import Chain
from nonod.audit._fanout import AuditHub, LiveRecord
from nonod.audit._writer import AuditWriter
from nonod.proxy import NetworkEvent

SUBSCRIBERS = 10


def _event(i: int) -> Network:
    return Network(mode="reverse", decision="allow", host="api.github.com", port=443,
                   method="GET", path=f"/repos/octo/bot/issues/{i}", status=200,
                   bytes_in=4096 + i % 512, bytes_out=312, duration_ms=41.5, route="github",
                   auth="ok", conn=f"c{i % 64}")


def _proxy_event(i: int) -> NetworkEvent:
    """What the proxy hands the session for one CONNECT tunnel: an open, then a close."""
    return NetworkEvent(mode="connect", decision="allow", host="echo.bench", port=443,
                        reason="allowed_host", status=200, bytes_in=64 * (i % 2),
                        bytes_out=64 * (i % 2), duration_ms=0.4 * (i % 2),
                        stage="close" if i % 2 else "open", address="127.0.0.1:40000")


def _started(session: str) -> SessionStarted:
    return SessionStarted(session=session, argv=("python3", "bot.py"), cwd="/srv/bot",
                          uid=1000, policy_digest="ab" * 32, profile="gitbot")


def bench_chain(n: int) -> dict[str, Any]:
    chain = Chain.for_session("bench")
    events = [_event(i) for i in range(n)]
    ts = "2025-06-01T12:00:00.000000Z"
    start = time.perf_counter()
    size = 0
    for event in events:
        size += len(chain.append(event, ts).line)
    elapsed = time.perf_counter() - start
    return {"name": "chain-only", "events": n, "seconds": elapsed, "eps": n / elapsed,
            "bytes_per_line": size / n}


async def bench_writer(state: Path, session: str, n: int, subscribers: int,
                       checkpoint_every: int, *, batch: bool = True,
                       proxy_path: bool = False) -> dict[str, Any]:
    from nonod.sessions._session import _audit_event

    hub = AuditHub()
    subs = [hub.subscribe(session=session, buffer=256) for _ in range(subscribers)]
    received = [0] * subscribers
    events: list[Any] = [_proxy_event(i) if proxy_path else _event(i) for i in range(n)]
    latencies: list[float] = []

    async def drain(index: int) -> None:
        sub = subs[index]
        if not batch:
            async for item in sub:
                received[index] += isinstance(item, LiveRecord)
            return
        while True:
            try:
                items = await sub.receive_batch()
            except trio.EndOfChannel:
                return
            received[index] += sum(isinstance(item, LiveRecord) for item in items)

    writer = await AuditWriter.create(state, session, hub=hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for index in range(subscribers):
            nursery.start_soon(drain, index)
        writer.append(_started(session))
        perf = time.perf_counter
        start = perf()
        for i, event in enumerate(events):
            t = perf()
            if proxy_path:
                converted = _audit_event(event)
                assert converted is not None
                writer.append(converted)
            else:
                writer.append(event)
            latencies.append(perf() - t)
            if i % checkpoint_every == 0:
                await trio.lowlevel.checkpoint()
        elapsed = perf() - start
        writer.append(SessionEnded(reason="exited", exit_code=0))
        await writer.seal()
    stats = writer.statistics()
    name = "writer" if not subscribers else f"writer+{subscribers}sub"
    if proxy_path:
        name = "proxy-path"
    if subscribers and checkpoint_every > 1:
        name += f"/{checkpoint_every}"
    if subscribers and not batch:
        name += " 1by1"
    latencies.sort()
    return {
        "name": name, "events": n, "seconds": elapsed, "eps": n / elapsed,
        "fsyncs": stats.fsyncs, "dropped": hub.statistics().dropped,
        "received_min": min(received) if received else None, "expected": n + 3,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "max_us": latencies[-1] * 1e6,
        "file": str(writer.path),
    }


def bench_verify(path: str) -> dict[str, Any]:
    start = time.perf_counter()
    result = verify_session_file(path)
    elapsed = time.perf_counter() - start
    lines = result.count + 1
    return {"name": "verify", "events": lines, "seconds": elapsed, "eps": lines / elapsed,
            "mib": os.path.getsize(path) / 2**20}


async def run(n: int) -> list[dict[str, Any]]:
    results = [bench_chain(n)]
    with tempfile.TemporaryDirectory(prefix="nono-bench-audit-") as tmp:
        state = Path(tmp)
        results.append(await bench_writer(state, "w0", n, 0, 1))
        results.append(await bench_writer(state, "p0", n, 0, 1, proxy_path=True))
        results.append(await bench_writer(state, "w10", n, SUBSCRIBERS, 1))
        results.append(await bench_writer(state, "w10b", n, SUBSCRIBERS, 64))
        results.append(await bench_writer(state, "w10c", n, SUBSCRIBERS, 1, batch=False))
        results.append(bench_verify(results[3]["file"]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = trio.run(run, args.events)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"# audit writer -- python {platform.python_version()}, {platform.machine()}, "
          f"nproc {os.cpu_count()}, {args.events} network events per run")
    print(f"# subscribers: {SUBSCRIBERS}, buffer 256; fsync every 1 s or 1000 events "
          "(worker thread)")
    print()
    print(f"{'run':<18} {'events/s':>11} {'seconds':>8} {'p50 us':>7} {'p99 us':>7} "
          f"{'max us':>8} {'fsyncs':>6} {'dropped':>7}")
    for r in results:
        extra = ""
        if "p50_us" in r:
            extra = (f" {r['p50_us']:>7.1f} {r['p99_us']:>7.1f} {r['max_us']:>8.0f} "
                     f"{r['fsyncs']:>6} {r['dropped']:>7}")
        print(f"{r['name']:<18} {r['eps']:>11,.0f} {r['seconds']:>8.3f}{extra}")
    w10 = results[3]
    print()
    print(f"# each of the {SUBSCRIBERS} subscribers received {w10['received_min']} of "
          f"{w10['expected']} records (events + start/end + seal)")
    print(f"# line size ~{results[0]['bytes_per_line']:.0f} bytes; verify read "
          f"{results[-1]['mib']:.1f} MiB")


if __name__ == "__main__":
    main()
