"""Crash safety: ``freellm serve`` killed with SIGKILL under load, restarted on its data directory.

The drill (:mod:`freellm.sim.crashdrill`) runs the real command in front of a fake Groq whose
per-minute cap the load keeps full, kills it at a random moment, and checks the database as the
kill left it and the restarted server against the last save and the fake's own count. Three kills
here; ``bench/crash_bench.py`` runs twenty. The seed is in every failure message.

The second test shows the rule is needed: the same kill, restarted from a save marked clean, sends
a call the fake refuses for its cap.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import trio
from harness import CLIENT_GENERATORS

from freellm.sim.crashdrill import CAPPED, Tally, open_drill

# A stream cut by the kill leaves httpx's body generator to the garbage collector: see harness.py.
pytestmark = CLIENT_GENERATORS

ROUNDS = 3


async def test_kill_9_under_load_keeps_the_store_usage_cooldowns_and_every_cap(
    tmp_path: Path,
) -> None:
    seed = random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    async with open_drill(tmp_path, seed=seed, keys=ROUNDS + 2) as drill:
        await drill.start()
        reports = []
        for number in range(1, ROUNDS + 1):
            kill_after = rng.uniform(1.0, 3.0)
            report = await drill.round(number, kill_after=kill_after, cool_down=number == 2)
            assert report.problems == [], (seed, report)
            reports.append(report)

        # After the last restart the keys held at a kill wait their minute; the key added since
        # takes the capped model, and nothing is sent past a cap.
        fresh = drill.keys[-1]
        await drill.load(2.5, Tally())
        assert drill.fake.usage(fresh.fake_id, CAPPED).requests_minute == drill.rpm, seed
        assert drill.upstream_429 == 0, seed
        assert await drill.stop() == 0
        after = await trio.to_thread.run_sync(drill.inspect, time.time())
        assert (after.integrity, after.running) == ("ok", False)  # a clean stop says so

    for report in reports:
        assert report.served > 0, (seed, report)
        assert report.true >= drill.rpm, (seed, report)  # the cap was reached before each kill
        assert report.restored >= max(report.true, report.saved), (seed, report)
    cooled = reports[1]
    assert cooled.cooldown_kept is True, (seed, cooled)
    assert cooled.cooldown_saved_s is not None, (seed, cooled)
    assert cooled.cooldown_saved_s < 1.0, (seed, cooled)


async def test_without_the_rule_a_restart_would_send_a_call_past_the_cap(tmp_path: Path) -> None:
    async with open_drill(tmp_path, keys=2) as drill:
        await drill.start()
        # Right after the start-up save: the fake's minute fills up, the next save is 5 s away.
        assert await drill.burst(f"groq/{CAPPED}", drill.rpm) == [200] * drill.rpm
        await drill.kill()
        saved = await trio.to_thread.run_sync(drill.inspect, time.time())
        (key,) = drill.keys
        assert saved.day_requests[key.id] == 0, "the burst was saved: the machine is too slow"
        twin = await drill.control(tmp_path / "control")

        await drill.start()  # the rule: the minute counts as full, nothing is sent
        assert await drill.burst(f"groq/{CAPPED}", 1) == [429]
        assert drill.upstream_429 == 0
        assert await drill.stop() == 0

        await twin.start()  # the same save, marked clean: the restart trusts it and sends
        await twin.burst(f"groq/{CAPPED}", 1)
        assert twin.upstream_429 == 1
        assert await twin.stop() == 0
