"""How fast the simulator replays traffic: requests of simulated traffic per second of wall time.

- core: ``freellm.sim.replay.replay`` on each shared trace (``../shared/data/traces/*``, else
  the test slices in ``tests/data/traces``), ``--rounds`` times each; the trace is read once,
  outside the timing.
- live: ``freellm.sim.live.replay_live`` on the first ``--live-requests`` requests of one trace
  at ``--live-speed``, once, beside the core replay of the same slice, so their figures (served,
  CPU per request) compare within the run. Client, server and fake providers all run in this
  process, on one trio thread: the figure is the live replay's own throughput, fakes included,
  not freellm's (``bench/proxy_bench.py`` measures freellm against an upstream ten times
  faster). ``kept up`` is the wall time the slice should take at that speed over the time it
  took: below 1.0 the driver fell behind, the trace was replayed stretched (the same requests
  over more of the trace's time) and its figures are a lighter load's.

Both use one key set (``--keys``, default below) whose caps bind on these traces: the served
share shows it; ``429s`` are the calls the providers refused (freellm sends none past a cap it
knows; live, a machine too busy for the speed can show a few: see ``freellm.sim.live``). CPU
time is this process's (threads included) over the replayed requests.

Run: ``.venv/bin/python bench/replay_bench.py [--traces DIR] [--rounds 3] [--keys P=N ...]
[--live-trace NAME] [--live-requests 2000] [--live-speed 60] [--no-live] [--no-pin] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from freellm.shell.config import bundled_catalog
from freellm.sim.live import replay_live
from freellm.sim.replay import Result, replay
from freellm.sim.trace import Trace, load_trace

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "traces"
TEST_SLICES = ROOT / "tests" / "data" / "traces"
# One key each of six providers of four wire formats: minute caps bind at the Azure traces'
# 3-6 requests a second, day caps (Gemini, GitHub, OpenRouter, Cohere) within the hour.
KEYS = {"groq": 1, "cerebras": 1, "google": 1, "cohere": 1, "openrouter": 1, "github": 1}


def parse_keys(given: list[str]) -> dict[str, int]:
    keys: dict[str, int] = {}
    for item in given:
        provider, _, count = item.partition("=")
        keys[provider] = int(count or "1")
    return keys


def trace_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".csv", ".jsonl"))


def cpu() -> float:
    return time.process_time()


def measure(run: Callable[[], Result]) -> tuple[Result, float, float]:
    """``run()``, its wall time and its CPU time."""
    wall, used = time.perf_counter(), cpu()
    result = run()
    return result, time.perf_counter() - wall, cpu() - used


def core_row(name: str, trace: Trace, keys: Mapping[str, int], rounds: int) -> dict[str, Any]:
    catalog = bundled_catalog()
    runs = [measure(lambda: replay(trace, catalog, keys)) for _ in range(rounds)]
    result = runs[0][0]
    wall = statistics.median(r[1] for r in runs)
    used = statistics.median(r[2] for r in runs)
    return row("core", name, trace, result, wall, used, best=min(r[1] for r in runs))


def row(
    mode: str,
    name: str,
    trace: Trace,
    result: Result,
    wall: float,
    used: float,
    *,
    best: float | None = None,
    kept_up: float | None = None,
) -> dict[str, Any]:
    requests = len(trace.requests)
    return {
        "mode": mode,
        "trace": name,
        "requests": requests,
        "minutes": trace.duration / 60,
        "served": result.served_fraction,
        "upstream_429": result.upstream_429,
        "wall_s": wall,
        "best_wall_s": best,
        "cpu_s": used,
        "requests_per_s": requests / wall if wall else None,
        "realtime_x": trace.duration / wall if wall else None,
        "cpu_us_per_request": used / requests * 1e6 if requests else None,
        "kept_up": kept_up,
    }


def live_rows(
    name: str, trace: Trace, keys: Mapping[str, int], speed: float
) -> list[dict[str, Any]]:
    catalog = bundled_catalog()
    core, core_wall, core_cpu = measure(lambda: replay(trace, catalog, keys))
    live, wall, used = measure(
        lambda: trio.run(lambda: replay_live(trace, catalog, keys, speed=speed))
    )
    label = f"{name} [:{len(trace.requests)}]"
    kept_up = (trace.duration / speed) / live.seconds if live.seconds else None
    return [
        row("core", label, trace, core, core_wall, core_cpu),
        row(f"live {speed:g}x", label, trace, live, wall, used, kept_up=kept_up),
    ]


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'mode':<9} {'trace':<38} {'requests':>8} {'minutes':>7} {'served':>6} {'429s':>5}"
        f" {'wall s':>7}"
        f" {'cpu s':>7} {'req/s':>8} {'x real':>7} {'cpu us/req':>10} {'kept up':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['mode']:<9} {r['trace']:<38} {r['requests']:>8,} {fmt(r['minutes'], 1):>7}"
            f" {fmt(r['served'] * 100, 0, '%'):>6} {r['upstream_429']:>5} {fmt(r['wall_s'], 2):>7}"
            f" {fmt(r['cpu_s'], 2):>7} {fmt(r['requests_per_s']):>8}"
            f" {fmt(r['realtime_x']):>7} {fmt(r['cpu_us_per_request']):>10}"
            f" {fmt(r['kept_up'], 2):>7}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=Path, default=None, help="a directory of traces")
    parser.add_argument("--rounds", type=int, default=3, help="core replays of each trace")
    parser.add_argument("--keys", nargs="*", default=None, metavar="P=N")
    parser.add_argument("--live-trace", default="azure_llm_2023_conv.csv")
    parser.add_argument("--live-requests", type=int, default=2000)
    parser.add_argument("--live-speed", type=float, default=60.0)
    parser.add_argument("--no-live", action="store_true")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    directory = args.traces or (SHARED if SHARED.is_dir() else TEST_SLICES)
    keys = parse_keys(args.keys) if args.keys else KEYS
    pinned = None
    if not args.no_pin and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {0})
        pinned = 0
    notes = [
        f"traces: {directory}",
        "keys: " + " ".join(f"{p}={n}" for p, n in keys.items()),
        f"pinned to CPU {pinned}" if pinned is not None else "not pinned",
    ]
    if not args.json:
        print("\n".join(notes), flush=True)

    rows: list[dict[str, Any]] = []
    traces: dict[str, Trace] = {}
    for path in trace_files(directory):
        started, used = time.perf_counter(), cpu()
        trace = traces[path.name] = load_trace(path)
        started, used = time.perf_counter() - started, cpu() - used
        if not args.json:
            size = f"{len(trace.requests):,} requests"
            print(f"read {path.name}: {size} in {started:.2f} s ({used:.2f} s CPU)", flush=True)
        rows.append(core_row(path.name, trace, keys, args.rounds))
    if not args.no_live:
        source = traces.get(args.live_trace) or load_trace(directory / args.live_trace)
        piece = source.head(args.live_requests)
        rows += live_rows(args.live_trace, piece, keys, args.live_speed)
    if args.json:
        print(json.dumps({"notes": notes, "rows": rows}, indent=2))
    else:
        print()
        print(table(rows))


if __name__ == "__main__":
    main()
