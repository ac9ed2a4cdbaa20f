"""Analytics from a real SQLite store: rows logged through ``Store.log_request`` and counted by
SQL (the log for a window's edges, the rollups for its middle) agree with a naive recount of the
same rows, before and after pruning and across the migration; and the time to first token
that the dispatcher measures reaches the log."""

from __future__ import annotations

import math
import random
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from scripted import Scenario, body, harnesses, streamed

from freellm.core import analytics as an
from freellm.core.catalog import Catalog, apply_config
from freellm.shell.analytics import analytics_report
from freellm.shell.dispatch import RequestLog
from freellm.shell.runtime import open_runtime
from freellm.shell.store import MIGRATIONS, AttemptRecord, RequestRecord, Store, migrate, open_store
from freellm.shell.store.records import cell_queries
from openai_wire import USAGE_CHUNK, chunk, completion

NOW = 1_780_000_000.0  # 2026-05-28, an arbitrary fixed instant
DAY = 86_400
TARGETS = ["groq/llama", "groq/qwen", "cerebras/llama", "google/gemini"]
OUTCOMES = ["rate_limited", "upstream_error", "timeout", "quota_exhausted"]

Logged = tuple[RequestRecord, list[AttemptRecord]]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "freellm.db"


# --- a log --------------------------------------------------------------------------------------


def instant(rng: random.Random) -> float:
    """Mostly anywhere in the last 40 days; often just on or before an hour or a day."""
    roll = rng.random()
    if roll < 0.7:
        return NOW - rng.uniform(0, 40 * DAY)
    period = rng.choice([3_600, 3 * 3_600, 12 * 3_600, DAY])
    edge = (int(NOW) // period - rng.randrange(0, 40 * DAY // period)) * period
    return edge - rng.choice([0.0, 0.0005, 1.0])


def duration(rng: random.Random) -> float:
    if rng.random() < 0.1:
        return rng.choice(an.EDGES_US) / 1000  # on an edge: SQL and Python must agree
    return rng.lognormvariate(6.0, 1.2)


def make_log(seed: int, n: int) -> list[Logged]:
    rng = random.Random(seed)
    log: list[Logged] = []
    for i in range(n):
        at = instant(rng)
        tries = rng.choice([1, 1, 1, 2, 3])
        answered = rng.random() < 0.85
        target = rng.choice(TARGETS) if answered else None
        attempts = []
        for k in range(1, tries + 1):
            last = k == tries
            provider = target.split("/")[0] if target and last else rng.choice(["groq", "google"])
            outcome = "success" if answered and last else rng.choice(OUTCOMES)
            attempts.append(
                AttemptRecord(
                    n=k,
                    provider=provider,
                    model="m",
                    key_id="k_00000001",
                    status=200 if outcome == "success" else rng.choice([429, 500, None]),
                    error_class=outcome if rng.random() < 0.98 else None,
                    latency_ms=duration(rng),
                    prompt_tokens=rng.randrange(1, 500) if outcome == "success" else None,
                    completion_tokens=rng.randrange(1, 500) if outcome == "success" else None,
                )
            )
        request = RequestRecord(
            id=f"req_{seed}_{i}",
            at=at,
            model="auto",
            routed_via=target,
            status=200 if answered else rng.choice([429, 502, 400, 499]),
            latency_ms=duration(rng),
            prompt_tokens=rng.randrange(1, 500) if answered else None,
            completion_tokens=rng.randrange(1, 500) if answered else None,
            attempts=tries,
            stream=rng.random() < 0.5,
            session=None,
            error=None if answered else "no",
            ttft_ms=duration(rng) if answered and rng.random() < 0.9 else None,
        )
        log.append((request, attempts))
    return log


async def write(store: Store, log: list[Logged], batches: int = 4) -> None:
    """Through the store's own insert path, in several batches (each adds to the rollups)."""
    size = math.ceil(len(log) / batches)
    for start in range(0, len(log), size):
        for request, attempts in log[start : start + size]:
            store.log_request(request, attempts)
        await store.flush()


# --- the naive recount --------------------------------------------------------------------------


def naive_percentiles(values: list[float]) -> dict[str, float | None]:
    def nearest_rank(p: int) -> float | None:
        if not values:
            return None
        value = sorted(values)[math.ceil(p * len(values) / 100) - 1]
        return an.bin_value(an.latency_bin(value))

    return {"p50": nearest_rank(50), "p95": nearest_rank(95)}


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def naive_report(log: list[Logged], name: str, now: float) -> dict[str, Any]:
    """The report of window ``name`` counted straight from the records."""
    window = an.WINDOWS[name]
    step = window.step_s
    until = (math.floor(now) // step + 1) * step
    since = until - window.span_s
    rs = [r for r, _ in log if since <= r.at < until]
    atts = [a for r, attempts in log if since <= r.at < until for a in attempts]

    def ok(r: RequestRecord) -> bool:
        return r.status < 400

    def tokens(rows: list[Any]) -> dict[str, int]:
        return {
            "prompt_tokens": sum(x.prompt_tokens or 0 for x in rows),
            "completion_tokens": sum(x.completion_tokens or 0 for x in rows),
        }

    models: list[dict[str, Any]] = []
    for target in {r.routed_via for r in rs}:
        mine = [r for r in rs if r.routed_via == target]
        good = sum(map(ok, mine))
        models.append(
            {
                "target": target,
                "requests": len(mine),
                "succeeded": good,
                "success_rate": rate(good, len(mine)),
                **tokens(mine),
                "latency_ms": naive_percentiles([r.latency_ms for r in mine]),
                "ttft_ms": naive_percentiles([r.ttft_ms for r in mine if r.ttft_ms is not None]),
            }
        )
    models.sort(key=lambda m: (-m["requests"], m["target"] is None, m["target"] or ""))
    providers: list[dict[str, Any]] = []
    for provider in {a.provider for a in atts}:
        tried = [a for a in atts if a.provider == provider]
        good = sum(a.error_class == "success" for a in tried)
        providers.append(
            {
                "provider": provider,
                "attempts": len(tried),
                "succeeded": good,
                "success_rate": rate(good, len(tried)),
                **tokens(tried),
                "latency_ms": naive_percentiles([a.latency_ms for a in tried]),
            }
        )
    providers.sort(key=lambda p: (-p["attempts"], p["provider"]))
    classes: dict[str, int] = {}
    for a in atts:
        if a.error_class != "success":
            classes[a.error_class or "unknown"] = classes.get(a.error_class or "unknown", 0) + 1
    succeeded = sum(map(ok, rs))
    attempts_ok = sum(a.error_class == "success" for a in atts)
    return {
        "window": name,
        "since": since,
        "until": until,
        "step_s": step,
        "totals": {
            "requests": len(rs),
            "succeeded": succeeded,
            "success_rate": rate(succeeded, len(rs)),
            "attempts": len(atts),
            "attempts_succeeded": attempts_ok,
            "attempt_success_rate": rate(attempts_ok, len(atts)),
            "fallbacks": sum(r.attempts > 1 for r in rs),
            **tokens(rs),
            "latency_ms": naive_percentiles([r.latency_ms for r in rs]),
            "ttft_ms": naive_percentiles([r.ttft_ms for r in rs if r.ttft_ms is not None]),
        },
        "timeline": [
            {
                "at": start,
                "requests": sum(start <= r.at < start + step for r in rs),
                "errors": sum(start <= r.at < start + step and not ok(r) for r in rs),
            }
            for start in range(since, until, step)
        ],
        "providers": providers,
        "models": models,
        "error_classes": [
            {"class": c, "count": n}
            for c, n in sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


def reference_cells(log: list[Logged], name: str, now: float) -> an.Cells:
    """The core's reference grouping of the same rows (what the SQL must compute)."""
    window = an.WINDOWS[name]
    since, until = an.bounds(window, now=now)
    requests = [
        an.RequestRow(
            r.at,
            r.routed_via,
            r.status,
            r.attempts,
            r.prompt_tokens,
            r.completion_tokens,
            r.latency_ms,
            r.ttft_ms,
        )
        for r, _ in log
    ]
    attempts = [
        an.AttemptRow(
            r.at, a.provider, a.error_class, a.prompt_tokens, a.completion_tokens, a.latency_ms
        )
        for r, tried in log
        for a in tried
    ]
    return an.cells_of(requests, attempts, since=since, until=until, step=window.step_s)


# Instants that put a window's edges on and off hours and days.
NOWS = [NOW, NOW + 1_234.5, NOW + 0.5 * DAY + 7, NOW + (DAY - NOW % DAY) - 0.5]


async def assert_agrees(store: Store, log: list[Logged]) -> None:
    for name in an.WINDOWS:
        for now in NOWS:
            window = an.WINDOWS[name]
            since, until = an.bounds(window, now=now)
            cells = await store.analytics_cells(since, until, window.step_s)
            assert an.merge(cells) == reference_cells(log, name, now), (name, now)
            assert await analytics_report(store, name, now=now) == naive_report(log, name, now)


# --- the report ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_window_agrees_with_a_naive_recount_of_the_logged_rows(
    db: Path, seed: int
) -> None:
    log = make_log(seed, 600)
    async with open_store(db) as store:
        await write(store, log)
        # A request id logged twice is written once, and counted once.
        request, attempts = log[0]
        store.log_request(attrs.evolve(request, status=500, latency_ms=1.0), attempts)
        await store.flush()
        report = await analytics_report(store, "30d", now=NOW)
        assert report["totals"]["requests"] > 100  # the windows are not empty
        await assert_agrees(store, log)


async def test_pruning_keeps_the_rollups_equal_to_what_is_left(db: Path) -> None:
    log = make_log(7, 600)
    async with open_store(db) as store:
        await write(store, log)
        for before in (NOW - 35 * DAY + 1_800.25, NOW - 25 * DAY, NOW - 10.5 * DAY):
            deleted = await store.prune_requests(before)
            kept = [(r, a) for r, a in log if r.at >= before]
            assert deleted == len(log) - len(kept)
            log = kept
            await assert_agrees(store, log)


async def test_logs_pending_are_not_counted_until_written(db: Path) -> None:
    log = make_log(4, 20)
    async with open_store(db) as store:
        for request, attempts in log:
            store.log_request(attrs.evolve(request, at=NOW - 10), attempts)
        assert (await analytics_report(store, "1h", now=NOW))["totals"]["requests"] == 0
        await store.flush()
        assert (await analytics_report(store, "1h", now=NOW))["totals"]["requests"] == 20


async def test_an_unknown_window_is_refused_naming_the_allowed_ones(db: Path) -> None:
    async with open_store(db) as store:
        with pytest.raises(ValueError, match=r"'2h'.*1h, 24h, 7d, 30d"):
            await analytics_report(store, "2h", now=NOW)


# --- indexes ------------------------------------------------------------------------------------


async def plan_of(store: Store, sql: str, parameters: Any = ()) -> str:
    def explain(connection: sqlite3.Connection) -> list[Any]:
        return connection.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()

    return " | ".join(row[-1] for row in await store._read(explain))


@pytest.mark.parametrize("name", list(an.WINDOWS))
async def test_every_window_query_reads_a_covering_index_or_a_rollup(db: Path, name: str) -> None:
    async with open_store(db) as store:
        await write(store, make_log(5, 200), batches=1)
        window = an.WINDOWS[name]
        since, until = an.bounds(window, now=NOW + 1_234.5)
        for query in cell_queries(since, until, window.step_s):
            details = await plan_of(store, query.sql, query.parameters)
            table = query.sql.split(" FROM ")[1].split()[0]
            if table in ("requests", "attempts"):
                assert f"USING COVERING INDEX {table}_window" in details, details
            elif table == "request_hours":
                assert "USING PRIMARY KEY (hour>? AND hour<?)" in details, details
            else:  # led by their keys: summed in the order of the GROUP BY, never sorted
                assert table in ("attempt_hours", "latency_days"), table
                assert details == f"SCAN {table}", details


async def test_failed_requests_are_the_latest_failures_newest_first(db: Path) -> None:
    log = make_log(6, 300)
    async with open_store(db) as store:
        await write(store, log)
        failed = sorted((r for r, _ in log if r.status >= 400), key=lambda r: r.at, reverse=True)
        assert await store.failed_requests(7) == failed[:7]
        assert len(await store.failed_requests(10_000)) == len(failed)
        plan = await plan_of(
            store,
            "SELECT id FROM requests WHERE status >= 400 ORDER BY at DESC, rowid DESC LIMIT 5",
        )
        assert plan == "SCAN requests USING INDEX requests_failed"


# --- the migration ------------------------------------------------------------------------------


def old_rows(connection: sqlite3.Connection, log: list[Logged]) -> None:
    """Rows as a version-2 freellm wrote them: no time to first token, no bins, no rollups."""
    for r, attempts in log:
        connection.execute(
            "INSERT INTO requests (id, at, model, routed_via, status, latency_ms, prompt_tokens,"
            " completion_tokens, attempts, stream, session, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.at, r.model, r.routed_via, r.status, r.latency_ms, r.prompt_tokens,
             r.completion_tokens, r.attempts, r.stream, r.session, r.error),
        )  # fmt: skip
        for a in attempts:
            connection.execute(
                "INSERT INTO attempts (request_id, n, provider, model, key_id, status,"
                " error_class, latency_ms, prompt_tokens, completion_tokens)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.id, a.n, a.provider, a.model, a.key_id, a.status, a.error_class, a.latency_ms,
                 a.prompt_tokens, a.completion_tokens),
            )  # fmt: skip


async def test_a_version_2_database_migrates_and_its_rows_are_counted(db: Path) -> None:
    log = [(attrs.evolve(r, ttft_ms=None), a) for r, a in make_log(8, 400)]
    db.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db, isolation_level=None)) as connection:
        migrate(connection, MIGRATIONS[:2])
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("BEGIN")
        old_rows(connection, log)
        connection.execute("COMMIT")
    newer = make_log(9, 100)  # logged after the upgrade, with their time to first token
    async with open_store(db) as store:
        assert await store._read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == len(
            MIGRATIONS
        )
        await write(store, newer, batches=2)
        log += newer
        await assert_agrees(store, log)
        # The migration's bins (SQL, from a table of edges) are Python's, edges included.
        binned = await store._read(
            lambda c: c.execute(
                "SELECT latency_ms, latency_bin FROM requests UNION ALL"
                " SELECT latency_ms, latency_bin FROM attempts"
            ).fetchall()
        )
        assert all(b == an.latency_bin(ms) for ms, b in binned)
        assert len(binned) == sum(1 + len(a) for _, a in log)


# --- time to first token ------------------------------------------------------------------------

CATALOG: Catalog = apply_config(
    Catalog(),
    {
        "providers": {
            "alpha": {
                "dialect": "openai",
                "base_url": "http://127.0.0.1:9/alpha",
                "models": [{"id": "m", "context": 32_000}],
            }
        },
        "router": {"chain": ["alpha/m"]},
    },
)
SCENARIO = Scenario(CATALOG, keys={"alpha": ["a1"]}, secrets={"a1": "sk-alpha"})


async def test_a_stream_logs_when_its_first_chunk_went_to_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harnesses(SCENARIO) as make:
        h = await make(
            lambda r: streamed(chunk("a"), chunk("b"), USAGE_CHUNK, b"data: [DONE]\n\n", pause=2)
        )
        await h.complete(body(stream=True))
    (log,) = h.logs
    assert log.ttft_s == pytest.approx(2.0)  # the first chunk's pause
    assert log.latency_s == pytest.approx(8.0)


async def test_a_json_answer_logs_when_its_body_went_to_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1.5)
        return httpx.Response(200, json=completion())

    async with harnesses(SCENARIO) as make:
        h = await make(slow)
        await h.complete(body())
    (log,) = h.logs
    assert log.ttft_s == pytest.approx(1.5)
    assert log.ttft_s is not None
    assert log.ttft_s <= log.latency_s


async def test_an_error_answer_logs_no_time_to_first_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harnesses(SCENARIO) as make:
        h = await make(lambda r: httpx.Response(500, text="boom"))
        await h.complete(body())
    (log,) = h.logs
    assert log.status == 502
    assert log.ttft_s is None


async def test_the_runtime_writes_the_time_to_first_token_in_milliseconds(tmp_path: Path) -> None:
    env = {"ENCRYPTION_KEY": "11" * 32}
    async with open_runtime(tmp_path, None, env=env, probes=False) as runtime:
        for n, ttft_s in enumerate((0.25, None)):
            runtime.log(
                RequestLog(
                    id=f"req_{n}",
                    at=NOW + n,
                    model="auto",
                    stream=True,
                    session=None,
                    status=200,
                    routed_via="alpha/m",
                    attempts=(),
                    usage=None,
                    latency_s=1.0,
                    ttft_s=ttft_s,
                )
            )
        await runtime.store.flush()
        written = await runtime.store.recent_requests()
    assert [(r.id, r.ttft_ms) for r in written] == [("req_1", None), ("req_0", 250.0)]
