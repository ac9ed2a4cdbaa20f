"""How long the Analytics page's report takes on a large request log.

Builds a log of ``--rows`` requests (1,000,000 by default; about 1.2 attempts each) spread over
30 days, with a realistic mix of models, providers, statuses and latencies, in a temporary
SQLite file with the real schema, through the store's own insert path (``Store.log_request``
and ``flush``, in batches of 10,000: the rollups are kept as the server keeps them). Then it
reopens the store, as a restarted server would, and times:

- ``analytics_report`` for each window (1h, 24h, 7d, 30d), ``--repeats`` times each;
- ``failed_requests(50)`` and ``recent_requests(50)``, the Requests list's two queries;

and prints, per row, the median and best wall time and the median CPU time (the process's,
worker thread included: on a shared machine the steadier figure). Beside each window, the
baseline: the same report with every cell grouped from the log (covering indexes, no rollups),
checked equal. Then SQLite's ``EXPLAIN QUERY PLAN`` of every query, to show that each reads a
covering index or a rollup.

Run: ``python bench/analytics_bench.py [--rows N] [--repeats R] [--db PATH]``. With ``--db`` the
log is kept in (or reused from) ``PATH``; without, it goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from freellm.core import analytics as an
from freellm.shell.analytics import analytics_report
from freellm.shell.store import AttemptRecord, RequestRecord, Store, open_store
from freellm.shell.store.records import REQUEST_COLUMNS, cell_queries, read_cells

NOW = 1_780_000_000.0 + 1_234.5  # not on a step: every window has edges to read from the log
SPAN_S = 30 * 86_400
BATCH = 10_000

# (target, weight): a few popular models, a long tail.
TARGETS = [
    ("groq/llama-3.3-70b-versatile", 30),
    ("google/gemini-2.5-flash", 20),
    ("cerebras/llama3.1-8b", 10),
    ("sambanova/Meta-Llama-3.3-70B-Instruct", 6),
    ("mistral/mistral-small-latest", 6),
    ("openrouter/deepseek/deepseek-chat-v3-0324:free", 5),
    ("github/gpt-4o-mini", 5),
    ("nvidia/meta/llama-3.3-70b-instruct", 4),
    ("cohere/command-r-plus", 3),
    ("groq/qwen/qwen3-32b", 3),
    ("google/gemini-2.5-pro", 2),
    ("cloudflare/@cf/meta/llama-3.1-8b-instruct", 2),
    ("zhipu/glm-4-flash", 1),
    ("huggingface/meta-llama/Llama-3.1-8B-Instruct", 1),
    ("moonshot/kimi-k2", 1),
    ("minimax/MiniMax-M1", 1),
]
FAILURES: list[tuple[str, int | None]] = [
    ("rate_limited", 429),
    ("quota_exhausted", 429),
    ("upstream_error", 503),
    ("timeout", None),
    ("connection_error", None),
]


def make_batch(
    rng: random.Random, start: int, size: int
) -> list[tuple[RequestRecord, list[AttemptRecord]]]:
    names = [t for t, _ in TARGETS]
    weights = [w for _, w in TARGETS]
    batch = []
    for i in range(start, start + size):
        at = NOW - rng.random() * SPAN_S
        tries = rng.choices((1, 2, 3), (83, 12, 5))[0]
        roll = rng.random()
        answered = roll < 0.93
        target = rng.choices(names, weights)[0] if answered else None
        attempts = []
        total_ms = 0.0
        for n in range(1, tries + 1):
            last = n == tries
            status: int | None = 200
            if answered and last:
                provider = target.split("/")[0] if target else "groq"
                outcome = "success"
            else:
                provider = rng.choices(names, weights)[0].split("/")[0]
                outcome, status = rng.choice(FAILURES)
            ms = rng.lognormvariate(6.3, 0.9) if outcome == "success" else rng.lognormvariate(4, 1)
            total_ms += ms
            attempts.append(
                AttemptRecord(
                    n,
                    provider,
                    "m",
                    f"k_{rng.randrange(40):08x}",
                    status,
                    outcome,
                    ms,
                    rng.randrange(50, 4000) if outcome == "success" else None,
                    rng.randrange(5, 1500) if outcome == "success" else None,
                )
            )
        answer = 200 if answered else rng.choices((429, 502, 400, 499), (50, 30, 10, 10))[0]
        usage = attempts[-1] if answered else None
        batch.append(
            (
                RequestRecord(
                    id=f"req_{i:024x}",
                    at=at,
                    model="auto",
                    routed_via=target,
                    status=answer,
                    latency_ms=total_ms + rng.uniform(0.5, 3),
                    prompt_tokens=None if usage is None else usage.prompt_tokens,
                    completion_tokens=None if usage is None else usage.completion_tokens,
                    attempts=tries,
                    stream=rng.random() < 0.6,
                    session=None,
                    error=None if answered else "every provider failed",
                    ttft_ms=total_ms * rng.uniform(0.15, 0.5) if answered else None,
                ),
                attempts,
            )
        )
    return batch


async def build(store: Store, rows: int) -> float:
    """Log ``rows`` requests through the store's insert path; the seconds it took."""
    rng = random.Random(1)
    began = time.perf_counter()
    for start in range(0, rows, BATCH):
        for request, attempts in make_batch(rng, start, min(BATCH, rows - start)):
            store.log_request(request, attempts)
        await store.flush()
        if start and start % 200_000 == 0:
            print(f"  {start:>9,} requests logged", flush=True)
    return time.perf_counter() - began


async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, float, float]:
    """Median and best wall milliseconds, and median CPU milliseconds, of ``repeats`` calls."""
    await call()  # warm the page cache: a server's second look, not its first
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        await call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls) * 1e3, min(walls) * 1e3, statistics.median(cpus) * 1e3


async def report_from_the_log(store: Store, name: str) -> dict[str, Any]:
    """The report as ``analytics_report`` makes it, but with every cell grouped from the log."""
    window = an.WINDOWS[name]
    since, until = an.bounds(window, now=NOW)
    cells = await store._read(lambda c: read_cells(c, since, until, window.step_s, rollups=False))
    return an.to_json(an.summarize(cells, window, since=since))


async def plan_of(store: Store, sql: str, parameters: Any = ()) -> list[str]:
    rows = await store._read(
        lambda c: c.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
    )
    return [row[-1] for row in rows]


async def main(rows: int, repeats: int, db: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="freellm-analytics-") as scratch:
        path = db or Path(scratch) / "freellm.db"
        if not path.exists():
            print(f"building a log of {rows:,} requests in {path} ...", flush=True)
            async with open_store(path) as store:
                seconds = await build(store, rows)
            print(
                f"  logged in {seconds:.1f} s ({rows / seconds:,.0f} requests/s, rollups included)"
            )
        async with open_store(path) as store:
            counts = await store._read(
                lambda c: [
                    c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in (
                        "requests",
                        "attempts",
                        "request_hours",
                        "attempt_hours",
                        "latency_days",
                    )
                ]
            )
            size = path.stat().st_size / 2**20
            print(
                f"log: {counts[0]:,} requests, {counts[1]:,} attempts; rollups: {counts[2]:,}"
                f" request hours, {counts[3]:,} attempt hours, {counts[4]:,} latency days;"
                f" file {size:,.0f} MiB"
            )
            print(f"\n{'query':<24}{'median ms':>11}{'best ms':>10}{'CPU ms':>9}  result")
            for name in an.WINDOWS:
                report = await analytics_report(store, name, now=NOW)
                figures = await timed(partial(analytics_report, store, name, now=NOW), repeats)
                print(
                    f"{'analytics ' + name:<24}{figures[0]:>11.1f}{figures[1]:>10.1f}"
                    f"{figures[2]:>9.1f}  {report['totals']['requests']:,} requests,"
                    f" p95 {report['totals']['latency_ms']['p95']:.0f} ms"
                )
                baseline = await report_from_the_log(store, name)
                assert baseline == report, f"the rollups and the log disagree on {name}"
                figures = await timed(partial(report_from_the_log, store, name), 3)
                print(
                    f"{'  log only (3 runs)':<24}{figures[0]:>11.1f}{figures[1]:>10.1f}"
                    f"{figures[2]:>9.1f}  the same report, without the rollups"
                )
            for label, call in (
                ("failed_requests(50)", lambda: store.failed_requests(50)),
                ("recent_requests(50)", lambda: store.recent_requests(50)),
            ):
                figures = await timed(call, repeats)
                print(f"{label:<24}{figures[0]:>11.2f}{figures[1]:>10.2f}{figures[2]:>9.2f}")

            print("\nquery plans (EXPLAIN QUERY PLAN)")
            for name, window in an.WINDOWS.items():
                since, until = an.bounds(window, now=NOW)
                print(f"\n{name}: [{since}, {until}), step {window.step_s} s")
                for query in cell_queries(since, until, window.step_s):
                    head = " ".join(query.sql.split())[:72]
                    print(f"  {head} ... {dict(query.parameters)}")
                    for line in await plan_of(store, query.sql, query.parameters):
                        print(f"      {line}")
            for label, sql in (
                (
                    "failed_requests",
                    f"SELECT {REQUEST_COLUMNS} FROM requests WHERE status >= 400"
                    " ORDER BY at DESC, rowid DESC LIMIT 50",
                ),
                (
                    "recent_requests",
                    f"SELECT {REQUEST_COLUMNS} FROM requests ORDER BY at DESC, rowid DESC LIMIT 50",
                ),
            ):
                print(f"\n{label}:")
                for line in await plan_of(store, sql):
                    print(f"      {line}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--db", type=Path, default=None, help="keep (or reuse) the log here")
    options = parser.parse_args()
    trio.run(main, options.rows, options.repeats, options.db)
