"""Issue 15's table in one command: every row, side by side with the peers, from one run.

Runs bench/launch.py, bench/daemon.py, bench/reverse.py and bench/proxy.py one after another
(each as a subprocess with ``--json``, so none shares an interpreter with another), then prints
one line per row of the issue's table: our figure, the peers' in the same run (bubblewrap,
nono-py), the ratio, the goal and whether it is met. The engine rows carry the enforcement
report of the sessions they timed ("fully enforced" when every layer is on).

    .venv/bin/python bench/table.py [--runs 200] [--fleet 1000] [--proxy-size BYTES]
                                    [--stream-size BYTES] [--quick] [--json]

``--quick`` shrinks every count (for checking the script, not for figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def _run(script: str, *args: str) -> dict[str, Any]:
    print(f"running bench/{script} {' '.join(args)}", file=sys.stderr, flush=True)
    out = subprocess.run([sys.executable, str(BENCH / script), *args, "--json"],
                         stdout=subprocess.PIPE, check=True, cwd=BENCH.parent)
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def _p50(results: list[dict[str, Any]], name: str) -> float | None:
    return next((float(r["p50"]) for r in results if r["name"] == name), None)


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def rows(launch: dict[str, Any], daemon: dict[str, Any], reverse: dict[str, Any],
         proxy: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def row(what: str, ours: str, peers: str, ratio: str, goal: str, ok: bool | None) -> None:
        out.append({"what": what, "ours": ours, "peers": peers, "ratio": ratio, "goal": goal,
                    "verdict": _verdict(ok)})

    lr = launch["results"]
    eng, bw, npy = _p50(lr, "nonod"), _p50(lr, "bwrap"), _p50(lr, "nono-py")
    row("engine launch /bin/true, p50, back to back", _fmt(eng, "ms", 2),
        f"bwrap {_fmt(bw, 'ms', 2)}, nono-py {_fmt(npy, 'ms', 2)}",
        f"{_ratio(eng, bw)} bwrap, {_ratio(eng, npy)} nono-py",
        "<= bwrap, <= 2x nono-py",
        None if None in (eng, bw, npy) else eng <= bw and eng <= 2 * npy  # type: ignore[operator]
        )
    dr = daemon["results"]
    client, engine = _p50(dr, "client"), _p50(dr, "engine-prof")
    row("launch through the daemon (connection kept), p50", _fmt(client, "ms", 2),
        f"engine, same policy {_fmt(engine, 'ms', 2)}; small policy "
        f"{_fmt(_p50(dr, 'engine'), 'ms', 2)} (same run)",
        "n/a" if client is None or engine is None else f"engine + {client - engine:.1f} ms",
        "engine + <= 3 ms",
        None if client is None or engine is None else client - engine <= 3)
    cli, floor = _p50(dr, "nonoctl"), _p50(dr, "python")
    row("nonoctl launch -- /bin/true, end to end, p50", _fmt(cli, "ms"),
        f"python -c pass {_fmt(floor, 'ms')}, nonoctl ps {_fmt(_p50(dr, 'nonoctl-ps'), 'ms')}",
        _ratio(cli, floor) + " python", "<= 60 ms (" + daemon.get("cli_install", "?") + ")",
        None if cli is None else cli <= 60)
    mem = daemon["memory"]
    n = mem["sessions"]
    procs = mem["session_processes"] / n - 1
    # Counted as everything below the fork server, less what was there before, over n: above
    # 1 by what the fork server keeps for all sessions (its one repair server, a warm
    # launcher made meanwhile), not by a session's own (tests/sandbox/test_reaper.py counts
    # those per user namespace: exactly 1).
    row("processes per idle session, besides the program", f"{procs:.2f}",
        f"{n} sessions; the fork server's repair server is shared by all", "-", "1",
        procs < 1 + 5 / n)
    pss = mem["per_session_kib"]["pss"] / 1024
    row(f"memory per idle session, PSS ({n} sessions)", _fmt(pss, "MiB", 2),
        f"RSS {mem['per_session_kib']['rss'] / 1024:.1f} MiB", "-", "<= 1 MiB", pss <= 1)
    idle = mem.get("settled", mem["idle"])  # no launch for [sandbox] warm_idle
    after = daemon.get("after_latency")  # the same once the daemon has worked
    worked = after["total"]["pss_mib"] if after else None
    fleet_left = daemon.get("after_fleet")  # shown, not judged: a burst's high-water mark
    burst = fleet_left["total"]["pss_mib"] if fleet_left else None
    row("daemon + fork server + warm launchers at idle, PSS", _fmt(idle["total"]["pss_mib"], "MiB"),
        f"daemon {idle['daemon']['pss_mib']:.1f}, fork server {idle['fork_server']['pss_mib']:.1f}"
        f", below it {idle['below']['pss_mib']:.1f} ({idle['below']['processes']} processes)"
        f"; 1 s after a launch {mem['idle']['total']['pss_mib']:.1f}"
        + (f"; settled after the latency runs {worked:.1f}" if worked is not None else "")
        + (f"; settled after the fleet {burst:.1f}" if burst is not None else ""),
        "-", "<= 40 MiB (both)",
        max(idle["total"]["pss_mib"], worked or 0.0) <= 40)
    fl = daemon.get("fleet")
    if fl:
        ok = (fl["failed"] == 0 and fl["launch_s"] <= 10 and fl["total"]["pss_mib"] <= 1229
              and fl["ps_p50_ms"] <= 50 and fl["launched"] >= 1000)
        row(f"{fl['requested']} sessions, netns + proxy, one client "
            f"({fl.get('inflight', 1)} in flight)",
            f"{fl['launch_s']:.1f} s, {fl['total']['pss_mib']:.0f} MiB PSS, {fl['failed']} failed",
            f"ps p50 {fl['ps_p50_ms']:.0f} ms (nonoctl, wheel)", "-",
            "1000 in <= 10 s, <= 1.2 GiB, 0 failed, ps <= 50 ms", ok)
    rr = reverse["results"]
    ours_s = rr.get("nonod", {}).get("stream_MBps")
    peer_s = rr.get("nono-py", {}).get("stream_MBps")
    row("credential-route streaming", _fmt(ours_s, "MB/s", 0),
        f"nono-py {_fmt(peer_s, 'MB/s', 0)}" + (f" ({reverse['skipped']['nono-py']})"
                                                if "nono-py" in reverse.get("skipped", {}) else ""),
        _ratio(ours_s, peer_s) + " nono-py", ">= nono-py",
        None if ours_s is None or peer_s is None else ours_s >= peer_s)
    direct, ours, peer = proxy.get("direct", {}), proxy.get("nonod", {}), proxy.get("nono-py", {})
    tp, tp_direct = ours.get("throughput_MiBps"), direct.get("throughput_MiBps")
    # Each round's figure is 16 transfers alternated with direct's (bench/proxy.py --slices):
    # where the scheduler puts the processes moves one transfer's rate 2-4x on 2 CPUs.
    spread = ""
    if "throughput_paired_min" in ours:
        spread = (f" (round by round {ours['throughput_paired_min']:.0%}-"
                  f"{ours['throughput_paired_max']:.0%}")
        if "throughput_sliced_q1" in ours:
            spread += (f"; transfers' quartiles {ours['throughput_sliced_q1']:.0%}-"
                       f"{ours['throughput_sliced_q3']:.0%}")
        spread += ")"
    row("CONNECT tunnel throughput", _fmt(tp, "MiB/s", 0),
        f"direct {_fmt(tp_direct, 'MiB/s', 0)}, "
        f"nono-py {_fmt(peer.get('throughput_MiBps'), 'MiB/s', 0)}",
        f"{tp / tp_direct:.0%} of direct{spread}" if tp and tp_direct else "n/a",
        ">= 70% of direct", None if not tp or not tp_direct else tp / tp_direct >= 0.7)
    base = direct.get("latency_p50_ms")
    added = None if base is None or "latency_p50_ms" not in ours else ours["latency_p50_ms"] - base
    peer_added = (None if base is None or "latency_p50_ms" not in peer
                  else peer["latency_p50_ms"] - base)
    row("added latency per fresh proxied request, p50", _fmt(added, "ms", 3),
        f"nono-py {_fmt(peer_added, 'ms', 3)}", _ratio(added, peer_added) + " nono-py",
        "<= nono-py", None if added is None or peer_added is None else added <= peer_added)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200, help="launch.py runs per contender")
    parser.add_argument("--fleet", type=int, default=1000, help="sessions in daemon.py's fleet")
    parser.add_argument("--proxy-size", type=int, default=1 << 30)
    parser.add_argument("--stream-size", type=int, default=100_000_000)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    q = args.quick
    launch = _run("launch.py", "--runs", str(10 if q else args.runs),
                  "--warmup", "2" if q else "20")
    daemon = _run("daemon.py", "--runs", "10" if q else "100", "--warmup", "2" if q else "10",
                  "--sessions", "10" if q else "100", "--fleet", str(20 if q else args.fleet))
    reverse = _run("reverse.py", "--size", str(10_000_000 if q else args.stream_size),
                   "--requests", "100" if q else "1000")
    proxy = _run("proxy.py", "--size", str((64 << 20) if q else args.proxy_size),
                 "--requests", "100" if q else "1000", "--tunnels", "100" if q else "1000",
                 "--rounds", "1" if q else "3", "--slices", "16", "--interleave", "100")
    table = rows(launch, daemon, reverse, proxy)
    if args.json:
        json.dump({"launch": launch["machine"], "rows": table}, sys.stdout, indent=1)
        print()
        return
    m = launch["machine"]
    print(f"# issue 15's table -- {m['date']}, engine {m['engine']}, kernel {m['kernel']}, "
          f"nproc {m['nproc']}, load {m['loadavg_1m']:.2f}")
    print(f"# {m['bwrap']}, nono-py {m['nono_py']}, landlock ABI {m['landlock_abi']}")
    print(f"# engine (bench/launch.py): {launch['nonod_enforcement']} "
          f"[{', '.join(launch['nonod_layers'])}]")
    print(f"# daemon sessions (bench/daemon.py): {daemon['memory']['enforcement']}")
    print("# one run; the machine is shared and noisy: read the ratios, not the absolutes")
    print()
    print("| what | ours | peers, same run | ratio | goal | |")
    print("|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['what']} | {r['ours']} | {r['peers']} | {r['ratio']} | {r['goal']} | "
              f"{r['verdict']} |")


if __name__ == "__main__":
    main()
