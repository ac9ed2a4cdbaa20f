"""A crash drill: ``freellm serve`` killed with SIGKILL under load, restarted, and checked.

The test suite runs a few rounds (``tests/e2e/test_crash.py``), ``bench/crash_bench.py`` many.

Set-up (:func:`open_drill`): one fake Groq on 127.0.0.1 serving two models: :data:`CAPPED`, with a
small cap of requests per minute (and one per day) that the load keeps full, and :data:`FREE`,
uncapped, the chain's fallback, so that the load is served throughout. The data directory holds
the unified key, the first provider key and a chain of three entries (one switched off), written
through the store as ``freellm keys add`` and ``chain set`` would.

A round (:meth:`Drill.round`): the server (a subprocess, ``--port 0``) takes a mixed load from a
few clients: JSON answers and streams, some streams slowed so that calls are in flight at any
moment. After a random while: SIGKILL. With the server down, a copy of the database files is
checked (``PRAGMA integrity_check``, the keys, the chain, the last save and its ``running`` mark):
the server itself then opens the files as the kill left them. It restarts on the same directory,
and what it serves is checked over HTTP (``/api/keys``, ``/api/chain``, ``/api/quotas``) against
the last save and against the fake's own count. Last, a fresh key is added while the server runs
(as the command line would): after a crash every key held before it waits a minute (see
:mod:`freellm.core.crash`), and the next round's load meets a cap with room again.

Every check that fails is a line in the round's :attr:`RoundReport.problems`. The fake admits
nothing past a cap, so every 429 it sends, but the one the drill injects to start a cooldown, is a
call freellm sent past a cap: ``upstream_429`` counts them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import trio

from freellm.core import ledger as ledger_
from freellm.shell.persistence import STATE_NAME
from freellm.shell.runtime import read_unified_key
from freellm.shell.secrets import Vault, load_master_key
from freellm.shell.store import open_store
from freellm.sim.fakes import FakeCaps, FakeProvider, FaultKind, key_id, open_fake_provider

__all__ = ["CAPPED", "FREE", "Drill", "RoundReport", "Saved", "Tally", "open_drill"]

CAPPED: Final = "llama-3.3-70b-versatile"
FREE: Final = "llama-3.1-8b-instant"
SWITCHED_OFF: Final = "meta-llama/llama-4-scout-17b-16e-instruct"
ENCRYPTION_KEY: Final = "c4" * 32
STARTUP_TIMEOUT_S: Final = 30.0
COOLDOWN_S: Final = 600.0
FREES_SLACK_S: Final = 0.05
"""The fake stamps a call when it arrives, freellm when it sends it: a loopback's latency apart."""


@attrs.frozen
class DrillKey:
    id: str  # freellm's
    secret: str
    fake_id: str  # the fake's


@attrs.define
class Tally:
    """What the clients saw: answers by status, and calls that broke (the server was down)."""

    statuses: Counter[int] = attrs.field(factory=Counter)
    broken: int = 0

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())


@attrs.frozen
class Saved:
    """The database as a kill left it (read from a copy)."""

    integrity: str
    keys: frozenset[tuple[str, str, str]]  # (id, provider, label)
    chain: tuple[tuple[str, bool], ...]
    running: bool | None
    saved_at: float | None
    day_requests: dict[str, int]  # key id: requests of CAPPED in its day window, at the check
    cooldowns: dict[tuple[str, str | None, str | None], float]  # in force at the check


@attrs.define
class RoundReport:
    number: int
    answered: int = 0  # requests answered before the kill
    served: int = 0  # of which 200
    killed_after_s: float = 0.0
    in_flight: int = 0  # calls the fake had in flight at the kill
    flush_age_s: float | None = None  # the kill's time less the last save's
    saved: int = 0  # requests of CAPPED, all keys held at the kill, in the last save's day windows
    restored: int = 0  # ... in the restarted server's day windows
    true: int = 0  # ... as the fake counted them
    held_s: float | None = None  # how long after the kill the first old key takes CAPPED again
    margin_s: float | None = None  # the least by which an old key is held past the fake's refusal
    upstream_429: int = 0  # 429s the fake sent during this round's load (the injected one aside)
    injected: int = 0  # 429s the drill asked the fake for (to start a cooldown)
    integrity: str = ""
    keys_ok: bool = False
    chain_ok: bool = False
    cooldown_saved_s: float | None = None  # an injected cooldown reached the store after this
    cooldown_kept: bool | None = None
    restart_s: float = 0.0
    problems: list[str] = attrs.field(factory=list)


class Drill:
    """One data directory, one fake, one server at a time. Make one with :func:`open_drill`."""

    def __init__(
        self,
        directory: Path,
        fake: FakeProvider,
        secrets: Sequence[str],
        *,
        rpm: int,
        clients: int,
        seed: int,
    ) -> None:
        self.directory = directory
        self.fake = fake
        self.rpm = rpm
        self.clients = clients
        self.rng = random.Random(seed)
        self.seed = seed
        self._spare = list(secrets)
        self.keys: list[DrillKey] = []
        self.chain = (
            (f"groq/{CAPPED}", True),
            (f"groq/{FREE}", True),
            (f"groq/{SWITCHED_OFF}", False),
        )
        self.unified_key = ""
        self.url = ""
        self.injected = 0  # 429s the drill asked the fake for
        self.process: trio.Process | None = None
        self._runs = 0

    @property
    def db(self) -> Path:
        return self.directory / "freellm.db"

    @property
    def upstream_429(self) -> int:
        return self.fake.rate_limited - self.injected

    # -- set-up ------------------------------------------------------------------------------

    async def prepare(self, *, rpd: int) -> None:
        """The config, the unified key, the first provider key and the chain."""
        config = (
            f'[providers.groq]\nbase_url = "{self.fake.base_url}"\n\n'
            f'[[providers.groq.models]]\nid = "{CAPPED}"\nrpm = {self.rpm}\nrpd = {rpd}\n'
            f"context = 131072\n\n"
            f'[[providers.groq.models]]\nid = "{FREE}"\ncontext = 131072\n\n'
            f'[router]\nchain = ["groq/{FREE}"]\n'
        )
        await trio.Path(self.directory).mkdir(parents=True, exist_ok=True)
        await trio.Path(self.directory / "freellm.toml").write_text(config, encoding="utf-8")
        vault = self._vault()
        async with open_store(self.db) as store:
            self.unified_key, _ = await read_unified_key(store, vault)
            await store.set_chain(list(self.chain))
        await self.add_key()

    def _vault(self) -> Vault:
        return Vault(load_master_key(self.directory, ENCRYPTION_KEY))

    async def add_key(self) -> DrillKey:
        """Store the next spare secret (labelled with the fake's id for it), as ``freellm keys
        add`` does; a running server takes it within about a second."""
        secret = self._spare.pop(0)
        vault = self._vault()
        async with open_store(self.db) as store:
            record = await store.add_key(
                "groq", key_id(secret), partial(_seal, vault, "groq", secret)
            )
        key = DrillKey(record.id, secret, key_id(secret))
        self.keys.append(key)
        return key

    # -- the server --------------------------------------------------------------------------

    async def start(self) -> float:
        """Start ``freellm serve`` on the directory; seconds until ``/readyz`` says ready.

        Raises ``RuntimeError`` when it does not come up within :data:`STARTUP_TIMEOUT_S`.
        """
        self._runs += 1
        env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "FREELLM_DATA_DIR")}
        env["ENCRYPTION_KEY"] = ENCRYPTION_KEY
        out = self.directory / f"serve-{self._runs}.out"
        err = self.directory / f"serve-{self._runs}.err"
        command = [
            sys.executable, "-m", "freellm.cli", "serve", "--port", "0",
            "--data-dir", str(self.directory), "--config", str(self.directory / "freellm.toml"),
        ]  # fmt: skip
        began = time.perf_counter()
        with open(out, "wb") as stdout, open(err, "wb") as stderr:  # noqa: ASYNC230 - local files
            self.process = await trio.lowlevel.open_process(
                command, stdout=stdout, stderr=stderr, env=env
            )
        with trio.fail_after(STARTUP_TIMEOUT_S):
            self.url = await _served_url(out, self.process)
            async with httpx.AsyncClient(base_url=self.url) as http:
                while (await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # another process: polled
        return time.perf_counter() - began

    def stderr(self) -> str:
        """What the last server wrote to its standard error."""
        return (self.directory / f"serve-{self._runs}.err").read_text(errors="replace")

    async def kill(self) -> float:
        """SIGKILL the server; the epoch time just before the signal went."""
        process = self._running()
        killed_at = time.time()
        process.kill()
        await process.wait()
        self.process = None
        return killed_at

    async def stop(self) -> int:
        """Stop the server as Ctrl-C does; its exit code."""
        process = self._running()
        process.send_signal(signal.SIGINT)
        with trio.fail_after(STARTUP_TIMEOUT_S):
            code = await process.wait()
        self.process = None
        return code

    def _running(self) -> trio.Process:
        if self.process is None:
            raise RuntimeError("no server is running")
        return self.process

    # -- load --------------------------------------------------------------------------------

    async def load(self, seconds: float, tally: Tally) -> None:
        """Run the clients for ``seconds``."""
        async with trio.open_nursery() as nursery:
            for index in range(self.clients):
                nursery.start_soon(self._client, tally, index)
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()

    async def _client(self, tally: Tally, index: int) -> None:
        rng = random.Random(f"{self.seed}-{self._runs}-{index}")
        headers = {"authorization": f"Bearer {self.unified_key}"}
        async with httpx.AsyncClient(timeout=30) as http:
            number = 0
            while True:
                number += 1
                stream = rng.random() < 0.5
                body = {
                    "model": "auto",
                    "messages": [{"role": "user", "content": f"client {index} asks {number}"}],
                    "max_tokens": 16,
                    "stream": stream,
                }
                url = f"{self.url}/v1/chat/completions"
                try:
                    if stream:
                        async with http.stream("POST", url, json=body, headers=headers) as answer:
                            async for _ in answer.aiter_raw():
                                pass
                            status = answer.status_code
                    else:
                        status = (await http.post(url, json=body, headers=headers)).status_code
                except httpx.HTTPError:
                    tally.broken += 1
                    await trio.sleep(0.05)
                    continue
                tally.statuses[status] += 1
                await trio.sleep(0.03 if status == 200 else 0.1)

    async def burst(self, model: str, n: int) -> list[int]:
        """``n`` JSON requests for ``model``, one after the other; their statuses."""
        headers = {"authorization": f"Bearer {self.unified_key}"}
        statuses = []
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            for number in range(n):
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": f"burst {number}"}],
                }
                answer = await http.post("/v1/chat/completions", json=body, headers=headers)
                statuses.append(answer.status_code)
        return statuses

    # -- a round -----------------------------------------------------------------------------

    async def round(self, number: int, *, kill_after: float, cool_down: bool) -> RoundReport:
        """Load for ``kill_after`` seconds (``cool_down``: with a 429 that asks for a 10-minute
        wait half-way), SIGKILL, check the database, restart, check the server, add a key."""
        report = RoundReport(number)
        held = {key.id for key in self.keys}
        tally = Tally()
        before = self.upstream_429
        began = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.load, kill_after + 60.0, tally)
            if cool_down:
                await trio.sleep(kill_after / 2)
                report.injected = 1
                report.cooldown_saved_s = await self._cool_one_down(report)
            await trio.sleep(max(0.0, kill_after - (time.perf_counter() - began)))
            report.in_flight = self.fake.in_flight
            killed_at = await self.kill()
            nursery.cancel_scope.cancel()
        report.killed_after_s = time.perf_counter() - began
        report.answered, report.served = tally.answered, tally.statuses[200]
        report.upstream_429 = self.upstream_429 - before
        if report.upstream_429:
            report.problems.append(f"{report.upstream_429} calls sent past a cap (upstream 429)")

        saved = await trio.to_thread.run_sync(self.inspect, time.time())
        true = {key.id: self.fake.usage(key.fake_id, CAPPED).requests_day for key in self.keys}
        frees = {key.id: self._fake_frees_at(key) for key in self.keys}
        self._check_saved(report, saved, killed_at)
        report.restart_s = await self.start()
        if "did not stop cleanly" not in self.stderr():
            report.problems.append("the restarted server did not say it found an unclean stop")
        await self._check_restored(report, saved, true, frees, held, killed_at)
        await self.add_key()
        return report

    async def _cool_one_down(self, report: RoundReport) -> float | None:
        """Have the fake answer the next call with a 429 asking for a 10-minute wait; how long
        after that answer the cooldown was in the store (``None``: not within 3 s)."""
        sent = self.fake.rate_limited
        self.fake.faults.next(1, FaultKind.RATE_LIMIT, retry_after=COOLDOWN_S)
        self.injected += 1
        with trio.move_on_after(5.0):
            while self.fake.rate_limited == sent:  # noqa: ASYNC110 - another server's counter
                await trio.sleep(0.005)
        answered = time.perf_counter()
        with trio.move_on_after(3.0):
            while True:
                cooldowns = await trio.to_thread.run_sync(self._saved_cooldowns)
                if any(until > time.time() + COOLDOWN_S - 60 for until in cooldowns.values()):
                    return time.perf_counter() - answered
                await trio.sleep(0.01)
        report.problems.append("a cooldown did not reach the store within 3 s")
        return None

    # -- checks ------------------------------------------------------------------------------

    def inspect(self, now: float) -> Saved:
        """Check a copy of the database files as the kill left them (the server will open the
        originals)."""
        scratch = self.directory / "inspect"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        for suffix in ("", "-wal", "-shm"):
            source = self.db.with_name(self.db.name + suffix)
            if source.exists():
                shutil.copy2(source, scratch / source.name)
        with closing(sqlite3.connect(scratch / self.db.name)) as connection:
            integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
            keys = connection.execute("SELECT id, provider, label FROM keys").fetchall()
            chain = connection.execute(
                "SELECT entry, enabled FROM chain ORDER BY position"
            ).fetchall()
            row = connection.execute(
                "SELECT value FROM state WHERE name = ?", (STATE_NAME,)
            ).fetchone()
        shutil.rmtree(scratch, ignore_errors=True)
        snapshot = json.loads(row[0]) if row is not None else {}
        book = ledger_.from_data(snapshot["ledger"]) if "ledger" in snapshot else ledger_.Ledger()
        day_requests = {}
        for key in self.keys:
            usage = book.usage.get(("groq", key.id, CAPPED))
            day_requests[key.id] = 0 if usage is None else usage.day.totals(now)[0]
        return Saved(
            integrity=str(integrity),
            keys=frozenset((str(i), str(p), str(label)) for i, p, label in keys),
            chain=tuple((str(entry), bool(enabled)) for entry, enabled in chain),
            running=snapshot.get("running"),
            saved_at=snapshot.get("saved_at"),
            day_requests=day_requests,
            cooldowns={
                scope: cooldown.until
                for scope, cooldown in book.cooldowns.items()
                if cooldown.until > now
            },
        )

    def _fake_frees_at(self, key: DrillKey) -> float | None:
        """When (epoch seconds) the fake's minute takes one more call of ``key`` on
        :data:`CAPPED`; ``None``: now. Read off the fake's own log of the key, which it keeps
        for its caps (read, never changed)."""
        fake = self.fake
        log = fake._log(key.fake_id, CAPPED)  # the truth the drill checks against
        refused = log.violation(fake._clock(), "requests", "minute", self.rpm, 1)
        return None if refused is None else time.time() + refused.retry_after

    def _saved_cooldowns(self) -> dict[tuple[str, str | None, str | None], float]:
        """The cooldowns of the last save, read while the server runs (WAL: readers do not
        wait)."""
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as connection:
            row = connection.execute(
                "SELECT value FROM state WHERE name = ?", (STATE_NAME,)
            ).fetchone()
        if row is None:
            return {}
        book = ledger_.from_data(json.loads(row[0])["ledger"])
        return {scope: cooldown.until for scope, cooldown in book.cooldowns.items()}

    def _check_saved(self, report: RoundReport, saved: Saved, killed_at: float) -> None:
        report.integrity = saved.integrity
        expected_keys = frozenset((key.id, "groq", key.fake_id) for key in self.keys)
        report.keys_ok = saved.keys == expected_keys
        report.chain_ok = saved.chain == self.chain
        report.saved = sum(saved.day_requests.values())
        if saved.saved_at is not None:
            report.flush_age_s = killed_at - saved.saved_at
        if saved.integrity != "ok":
            report.problems.append(f"integrity check: {saved.integrity}")
        if not report.keys_ok:
            report.problems.append(f"keys in the database: {sorted(saved.keys)}")
        if not report.chain_ok:
            report.problems.append(f"chain in the database: {saved.chain}")
        if saved.running is not True:
            report.problems.append(f"the last save's running mark is {saved.running!r}")

    async def _check_restored(
        self,
        report: RoundReport,
        saved: Saved,
        true: dict[str, int],
        frees: dict[str, float | None],
        held: set[str],
        killed_at: float,
    ) -> None:
        headers = {"authorization": f"Bearer {self.unified_key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers) as http:
            keys = (await http.get("/api/keys")).json()["data"]
            chain = (await http.get("/api/chain")).json()["data"]
            quotas = (await http.get("/api/quotas")).json()
            answered = time.time()  # the server judged the rows before this
        if {key["id"] for key in keys} != {key.id for key in self.keys}:
            report.keys_ok = False
            report.problems.append(f"keys served: {sorted(key['id'] for key in keys)}")
        if tuple((entry["target"], entry["enabled"]) for entry in chain) != self.chain:
            report.chain_ok = False
            report.problems.append(f"chain served: {chain}")
        rows = {(row["key_id"], row["model"]): row for row in quotas["rows"]}
        held_until: list[float] = []
        margins: list[float] = []
        for held_id in sorted(held):
            row = rows.get((held_id, CAPPED))
            if row is None:
                report.problems.append(f"no quota row for {held_id}")
                continue
            restored = row["windows"]["rpd"]["used"]
            report.restored += restored
            report.true += true[held_id]
            if restored < saved.day_requests[held_id]:
                report.problems.append(
                    f"{held_id}: {restored} requests today, {saved.day_requests[held_id]} saved"
                )
            if restored < true[held_id]:
                report.problems.append(
                    f"{held_id}: {restored} requests today, {true[held_id]} sent"
                )
            truth = frees[held_id]
            if row["available"] or row["retry_at"] is None:
                if truth is not None and truth > answered + FREES_SLACK_S:
                    report.problems.append(
                        f"{held_id}: takes {CAPPED} again at once, the fake not for"
                        f" {truth - answered:.1f} s"
                    )
                continue
            held_until.append(row["retry_at"])
            if truth is None:
                continue
            margins.append(row["retry_at"] - truth)
            if row["retry_at"] < truth - FREES_SLACK_S:
                report.problems.append(
                    f"{held_id}: takes {CAPPED} again {truth - row['retry_at']:.2f} s before"
                    " the fake would"
                )
        if held_until:
            report.held_s = min(held_until) - killed_at
        if margins:
            report.margin_s = min(margins)
        if saved.cooldowns:
            report.cooldown_kept = all(
                _cooldown_served(rows, scope, until) for scope, until in saved.cooldowns.items()
            )
            if not report.cooldown_kept:
                report.problems.append(f"a cooldown ended early: {saved.cooldowns}")

    async def control(self, directory: Path) -> Drill:
        """A copy of this drill's data directory (the server down), whose last save is marked as
        a clean stop's: what a restart without the rule would do."""
        await trio.to_thread.run_sync(partial(shutil.copytree, self.directory, directory))
        twin = Drill(directory, self.fake, self._spare, rpm=self.rpm, clients=1, seed=self.seed)
        twin.keys, twin.unified_key, twin.injected = (
            list(self.keys),
            self.unified_key,
            self.injected,
        )
        with closing(sqlite3.connect(twin.db)) as connection:
            (value,) = connection.execute(
                "SELECT value FROM state WHERE name = ?", (STATE_NAME,)
            ).fetchone()
            snapshot = json.loads(value)
            snapshot["running"] = False
            connection.execute(
                "UPDATE state SET value = ? WHERE name = ?", (json.dumps(snapshot), STATE_NAME)
            )
            connection.commit()
        return twin


def _cooldown_served(
    rows: dict[tuple[str, str], dict[str, Any]],
    scope: tuple[str, str | None, str | None],
    until: float,
) -> bool:
    """Whether the restarted server shows the saved cooldown of ``scope`` (a slot, a whole key,
    or a model on every key), ending no earlier."""
    _, key, model = scope
    kind = "slot" if key is not None and model is not None else "key" if key else "model"
    for (row_key, _), row in rows.items():
        if key is not None and row_key != key:
            continue
        for cooldown in row["cooldowns"]:
            if (
                cooldown["scope"] == kind
                and (kind == "key" or cooldown["model"] == model)
                and cooldown["until"] >= until - 1e-6
            ):
                return True
    return False


def _seal(vault: Vault, provider: str, secret: str, key: str) -> bytes:
    return vault.seal(key, provider, secret)


async def _served_url(out: Path, process: trio.Process) -> str:
    """The URL a starting server printed (``freellm ... serving http://...:PORT/v1``)."""
    while True:
        text = await trio.Path(out).read_text(errors="replace")
        for line in text.splitlines():
            if " serving " in line and line.endswith("/v1"):
                return line.rsplit(" ", 1)[1].removesuffix("/v1")
        if process.returncode is not None:
            raise RuntimeError(f"freellm serve exited with {process.returncode}: {text}")
        await trio.sleep(0.01)


@contextlib.asynccontextmanager
async def open_drill(
    directory: Path,
    *,
    rpm: int = 4,
    rpd: int = 1000,
    keys: int = 8,
    clients: int = 4,
    seed: int = 0,
) -> AsyncIterator[Drill]:
    """A fake Groq and a prepared data directory under ``directory``, with ``keys`` secrets the
    fake accepts (one stored, the others for :meth:`Drill.add_key`). On the way out a server
    still running is killed."""
    secrets = [f"gsk-crash-drill-{n}" for n in range(keys)]
    models = {CAPPED: FakeCaps(rpm=rpm, rpd=rpd), FREE: FakeCaps()}
    async with open_fake_provider("groq", keys=secrets, models=models, record=False) as fake:
        fake.faults.always(FaultKind.LATENCY, gap=0.1, probability=0.3)
        drill = Drill(directory / "data", fake, secrets, rpm=rpm, clients=clients, seed=seed)
        await drill.prepare(rpd=rpd)
        try:
            yield drill
        finally:
            if drill.process is not None:
                with trio.CancelScope(shield=True):
                    await drill.kill()
