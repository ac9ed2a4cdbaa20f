"""Crash safety, repeated: ``freellm serve`` killed with SIGKILL under load, ``--rounds`` times.

Each round is :meth:`freellm.sim.crashdrill.Drill.round`: a mixed load (JSON and streams from
``--clients`` clients; a fake Groq whose per-minute cap of ``--rpm`` the load keeps full, and an
uncapped fallback), SIGKILL after a random ``--kill-after`` seconds, the database checked as the
kill left it, a restart on the same directory, the restarted server checked against the last save
and the fake's own count, and a fresh key added for the next round (after a crash the keys held
before it wait a minute). Every fifth round, from the second, injects a 429 that asks for a
10-minute wait half-way through its load, and checks that the cooldown reached the store and
survived.

After the last round, the load runs ``--tail`` seconds more (70 by default: past the minute the
old keys wait), and the server stops cleanly. Last, the control: a kill right after a burst that
fills the fake's minute, restarted twice from the same files, once as they are (the rule) and
once with the last save marked as a clean stop's (no rule): only the second sends past the cap.

Columns: ``answered``/``served`` requests of the round's load (the load after the previous
restart), ``kill s`` when the kill came, ``in flt`` calls the fake had in flight at the kill,
``flush s`` how old the last save was at the kill, ``saved``/``restored``/``true`` requests of the
capped model today, summed over the keys held at the kill (in the last save; as the restarted
server counts them; as the fake counted them), ``429s`` the fake sent during the round's load and
``viol.`` those that were calls past a cap (all of them but the injected one), ``db`` the integrity
check, keys and chain, ``cooldown`` ms from the injected 429 to the store and whether it survived,
``restart s`` from spawn to ``/readyz``, ``held s`` when the first old key takes the capped model
again (counted from the kill), ``margin s`` the least by which freellm holds an old key back past
the moment the fake would take a call on it again (never below zero, give or take the loopback's
latency: the fake stamps a call as it arrives).

Run: ``.venv/bin/python bench/crash_bench.py [--rounds 20] [--seed S] [--rpm 4] [--clients 4]
[--kill-after 1.5 4] [--tail 70] [--json]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from freellm.sim.crashdrill import CAPPED, Drill, RoundReport, Tally, open_drill

HEADER = (
    f"{'round':>5} {'answered':>8} {'served':>6} {'kill s':>6} {'in flt':>6} {'flush s':>7}"
    f" {'saved':>5} {'restored':>8} {'true':>5} {'429s':>4} {'viol.':>5} {'db':>10}"
    f" {'cooldown':>10} {'restart s':>9} {'held s':>6} {'margin s':>8}  problems"
)


def row(report: RoundReport) -> str:
    db = f"{report.integrity}{'' if report.keys_ok else ' keys!'}"
    db += "" if report.chain_ok else " chain!"
    cooldown = {None: "-", True: "kept", False: "LOST"}[report.cooldown_kept]
    if report.injected:
        ms = "?" if report.cooldown_saved_s is None else f"{report.cooldown_saved_s * 1000:.0f}"
        cooldown = f"{ms}ms {cooldown}"
    return (
        f"{report.number:>5} {report.answered:>8} {report.served:>6}"
        f" {report.killed_after_s:>6.2f} {report.in_flight:>6} {_num(report.flush_age_s, 2):>7}"
        f" {report.saved:>5} {report.restored:>8} {report.true:>5}"
        f" {report.upstream_429 + report.injected:>4} {report.upstream_429:>5} {db:>10}"
        f" {cooldown:>10} {report.restart_s:>9.2f} {_num(report.held_s, 1):>6}"
        f" {_num(report.margin_s, 2):>8}  {'; '.join(report.problems) or '-'}"
    )


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


async def tail(drill: Drill, seconds: float) -> dict[str, Any]:
    """The load after the last restart, past the minute the old keys wait."""
    old = drill.keys[:-1]
    before = drill.upstream_429
    used = {key.id: drill.fake.usage(key.fake_id, CAPPED).requests_day for key in old}
    tally = Tally()
    await drill.load(seconds, tally)
    resumed = sum(drill.fake.usage(k.fake_id, CAPPED).requests_day - used[k.id] for k in old)
    return {
        "seconds": seconds,
        "answered": tally.answered,
        "served": tally.statuses[200],
        "old_keys_served": resumed,
        "upstream_429": drill.upstream_429 - before,
    }


async def control(directory: Path, rpm: int) -> dict[str, Any]:
    """The same kill restarted with the rule and without it (the save marked clean)."""
    async with open_drill(directory, rpm=rpm, keys=2) as drill:
        await drill.start()
        burst = await drill.burst(f"groq/{CAPPED}", rpm)
        await drill.kill()
        saved = await trio.to_thread.run_sync(drill.inspect, time.time())
        unsaved = saved.day_requests[drill.keys[0].id] == 0
        twin = await drill.control(directory / "control")
        await drill.start()
        with_rule = await drill.burst(f"groq/{CAPPED}", 1)
        with_rule_429 = drill.upstream_429
        await drill.stop()
        await twin.start()
        without_rule = await twin.burst(f"groq/{CAPPED}", 1)
        without_rule_429 = twin.upstream_429 - with_rule_429
        await twin.stop()
    return {
        "burst": burst,
        "burst_after_the_last_save": unsaved,
        "with_rule": {"client_statuses": with_rule, "upstream_429": with_rule_429},
        "without_rule": {"client_statuses": without_rule, "upstream_429": without_rule_429},
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    low, high = args.kill_after
    reports: list[RoundReport] = []
    with tempfile.TemporaryDirectory(prefix="freellm-crash-") as scratch:
        root = Path(scratch)
        async with open_drill(
            root / "drill", rpm=args.rpm, keys=args.rounds + 2, clients=args.clients, seed=seed
        ) as drill:
            await drill.start()
            if not args.json:
                print(f"seed {seed}; {args.rounds} rounds; rpm {args.rpm}; {args.clients} clients")
                print(HEADER)
            for number in range(1, args.rounds + 1):
                report = await drill.round(
                    number, kill_after=rng.uniform(low, high), cool_down=number % 5 == 2
                )
                reports.append(report)
                if not args.json:
                    print(row(report), flush=True)
            if not args.json:
                print(f"tail: {args.tail:.0f} s of load after the last restart ...", flush=True)
            after = await tail(drill, args.tail)
            stopped = await drill.stop()
            final = await trio.to_thread.run_sync(drill.inspect, time.time())
        checked = await control(root / "control", args.rpm)
    return {
        "seed": seed,
        "rpm": args.rpm,
        "clients": args.clients,
        "rounds": [attrs.asdict(report) for report in reports],
        "summary": summary(reports),
        "tail": after,
        "clean_stop": {"exit": stopped, "integrity": final.integrity, "running": final.running},
        "control": checked,
    }


def summary(reports: Sequence[RoundReport]) -> dict[str, Any]:
    restarts = [r.restart_s for r in reports]
    ages = [r.flush_age_s for r in reports if r.flush_age_s is not None]
    held = [r.held_s for r in reports if r.held_s is not None]
    cooldowns = [r.cooldown_saved_s for r in reports if r.cooldown_saved_s is not None]
    margins = [r.margin_s for r in reports if r.margin_s is not None]
    return {
        "rounds": len(reports),
        "rounds_with_problems": sum(1 for r in reports if r.problems),
        "answered": sum(r.answered for r in reports),
        "served": sum(r.served for r in reports),
        "in_flight_at_kills": sum(r.in_flight for r in reports),
        "upstream_429": sum(r.upstream_429 + r.injected for r in reports),
        "cap_violations": sum(r.upstream_429 for r in reports),
        "integrity_ok": sum(1 for r in reports if r.integrity == "ok"),
        "keys_and_chain_ok": sum(1 for r in reports if r.keys_ok and r.chain_ok),
        "saved": sum(r.saved for r in reports),
        "restored": sum(r.restored for r in reports),
        "true": sum(r.true for r in reports),
        "cooldowns_injected": sum(r.injected for r in reports),
        "cooldowns_checked": sum(1 for r in reports if r.cooldown_kept is not None),
        "cooldowns_kept": sum(1 for r in reports if r.cooldown_kept),
        "cooldown_saved_ms_max": max(cooldowns) * 1000 if cooldowns else None,
        "flush_age_s_mean": statistics.fmean(ages) if ages else None,
        "flush_age_s_max": max(ages) if ages else None,
        "restart_s_median": statistics.median(restarts) if restarts else None,
        "restart_s_max": max(restarts) if restarts else None,
        "held_s_min": min(held) if held else None,
        "held_s_max": max(held) if held else None,
        "margin_s_min": min(margins) if margins else None,
    }


def print_summary(result: dict[str, Any]) -> None:
    s = result["summary"]
    print()
    print(
        f"{s['rounds']} kills, {s['rounds_with_problems']} with a problem; {s['answered']} requests"
        f" answered ({s['served']} served), {s['in_flight_at_kills']} calls in flight at the kills"
    )
    print(
        f"upstream 429s {s['upstream_429']} ({s['cooldowns_injected']} injected),"
        f" cap violations {s['cap_violations']}; integrity ok {s['integrity_ok']}/{s['rounds']},"
        f" keys and chain ok {s['keys_and_chain_ok']}/{s['rounds']}"
    )
    print(
        f"capped requests today, old keys, summed over the kills: saved {s['saved']},"
        f" restored {s['restored']}, true {s['true']} (restored is never below either; the"
        " saves and restarts also count what earlier crashes' rule added)"
    )
    print(
        f"{s['cooldowns_injected']} cooldowns started, in the store at most"
        f" {_num(s['cooldown_saved_ms_max'], 0)} ms after their 429; kept through"
        f" {s['cooldowns_kept']} of the {s['cooldowns_checked']} restarts that found one in force;"
        " last save before a kill:"
        f" {_num(s['flush_age_s_mean'], 2)} s old on average, {_num(s['flush_age_s_max'], 2)} s"
        " at most (a save every 5 s)"
    )
    print(
        f"restart to /readyz: median {_num(s['restart_s_median'], 2)} s, max"
        f" {_num(s['restart_s_max'], 2)} s; the first old key takes the capped model again"
        f" {_num(s['held_s_min'], 1)} to {_num(s['held_s_max'], 1)} s after a kill, never before"
        f" the fake would take it (least margin {_num(s['margin_s_min'], 2)} s)"
    )
    t = result["tail"]
    print(
        f"tail: {t['seconds']:.0f} s, {t['answered']} answered ({t['served']} served), old keys"
        f" took {t['old_keys_served']} calls of {CAPPED} again, upstream 429s {t['upstream_429']}"
    )
    c = result["clean_stop"]
    print(f"clean stop: exit {c['exit']}, integrity {c['integrity']}, running mark {c['running']}")
    k = result["control"]
    print(
        f"control (a kill right after {len(k['burst'])} calls filled the fake's minute, the last"
        f" save before them: {'yes' if k['burst_after_the_last_save'] else 'NO'}): with the rule"
        " the next call gets"
        f" {k['with_rule']['client_statuses']} and the fake sees"
        f" {k['with_rule']['upstream_429']} 429s; restarted from a save marked clean it gets"
        f" {k['without_rule']['client_statuses']} and the fake sends"
        f" {k['without_rule']['upstream_429']} 429"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rpm", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--kill-after", type=float, nargs=2, default=(1.5, 4.0), metavar=("MIN", "MAX")
    )
    parser.add_argument("--tail", type=float, default=70.0)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = trio.run(run, args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result)
    bad = (
        result["summary"]["rounds_with_problems"]
        or result["tail"]["upstream_429"]
        or result["control"]["with_rule"]["upstream_429"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
