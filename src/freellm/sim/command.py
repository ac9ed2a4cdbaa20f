"""``freellm replay`` and ``freellm export-trace``: what the command line runs.

``replay`` reads a trace, the catalog (the config file's, as the server would), and a key set:
``--keys PROVIDER=N ...``, else the enabled keys stored in the data dir (only their providers
are read, never a secret). ``--sample F`` keeps about that fraction of the trace's
conversations (drawn with ``--seed``), to bring its demand near what the keys can serve;
``--repeat N`` plays it N times in a row (a short trace then fills the day windows). It
replays the trace under freellm's policy with the configured strategy (and with ``--policy all``
the baselines, and freellm with its other strategy: ``freellm-chain`` or ``freellm-capacity``),
computes the upper bound, and prints a table (a progress bar on a terminal),
or one JSON object with ``--json``; ``--report out.html`` also writes a page with charts.
``--suggest`` replays once more per provider with one more key of it, and ranks them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, TextIO

import trio

from freellm.core.catalog import Catalog, Strategy
from freellm.shell.config import load_catalog
from freellm.shell.store import open_store
from freellm.sim.bounds import upper_bound
from freellm.sim.replay import Result, replay
from freellm.sim.report import (
    Replayed,
    html,
    progress_bar,
    suggestions_table,
    table,
    to_json,
)
from freellm.sim.trace import (
    Trace,
    TraceError,
    dump_trace,
    load_trace,
    parse_since,
    trace_from_log,
)

__all__ = ["POLICIES", "ReplayError", "export_trace", "parse_keys", "run_replay"]

POLICIES: Final = ("freellm", "first-fit", "round-robin", "least-used")


class ReplayError(Exception):
    """What the user asked cannot be replayed; the message says why."""


def parse_keys(given: list[str], catalog: Catalog) -> dict[str, int]:
    """``PROVIDER=N`` items as a key set. Raises :class:`ReplayError` for a bad one."""
    keys: dict[str, int] = {}
    for item in given:
        provider, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise ReplayError(f"--keys takes PROVIDER=N items, got {item!r}")
        if provider not in catalog.providers:
            known = ", ".join(sorted(catalog.providers))
            raise ReplayError(f"--keys: no provider {provider!r} in the catalog ({known})")
        keys[provider] = int(count)
    return keys


async def stored_keys(data_dir: Path, catalog: Catalog) -> dict[str, int]:
    """How many enabled keys of each catalog provider the data dir's store holds."""
    if not (data_dir / "freellm.db").is_file():
        return {}
    counts: dict[str, int] = {}
    async with open_store(data_dir / "freellm.db") as store:
        for record in await store.list_keys():
            if record.enabled and record.provider in catalog.providers:
                counts[record.provider] = counts.get(record.provider, 0) + 1
    return counts


async def run_replay(
    trace_path: Path,
    *,
    format: str | None,
    config: Path | None,
    data_dir: Path,
    keys: list[str],
    mode: str,
    speed: float,
    seed: int,
    policy: str,
    suggest: bool,
    as_json: bool,
    report: Path | None,
    sample: float | None = None,
    repeat: int = 1,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    catalog = load_catalog(config)
    try:
        trace = load_trace(trace_path, format)
        if sample is not None:
            trace = trace.subsample(sample, seed)
        trace = trace.repeat(repeat)
    except (OSError, TraceError, ValueError) as exc:
        raise ReplayError(str(exc)) from None
    key_set = parse_keys(keys, catalog) if keys else await stored_keys(data_dir, catalog)
    if not key_set:
        raise ReplayError(
            "no keys to replay with: pass --keys PROVIDER=N ... (e.g. --keys groq=2 google=1),"
            " or add keys to the data dir"
        )
    show = _progress(err) if not as_json else None
    main = await _one(trace, catalog, key_set, "freellm", mode, speed, seed, show)
    baselines: dict[str, Result] = {}
    if policy == "all":
        other = (
            "freellm-chain"
            if catalog.settings.strategy is Strategy.CAPACITY
            else "freellm-capacity"
        )
        for name in (other, *POLICIES[1:]):
            baselines[name] = await _one(trace, catalog, key_set, name, "core", speed, seed, show)
    elif policy != "freellm":
        baselines[policy] = await _one(trace, catalog, key_set, policy, "core", speed, seed, show)
    bound = upper_bound(trace, catalog, key_set)
    run = Replayed(trace, key_set, main, bound, baselines)
    if report is not None:
        await trio.Path(report).write_text(html(run), encoding="utf-8")
    if as_json:
        out.write(json.dumps(to_json(run)) + "\n")
    else:
        out.write(table(run) + "\n")
        if report is not None:
            out.write(f"report: {report}\n")
    if suggest:
        ranked = _suggest(trace, catalog, key_set, seed)
        if as_json:
            return 0
        out.write("\n" + suggestions_table(main.served, ranked) + "\n")
    return 0


async def _one(
    trace: Trace,
    catalog: Catalog,
    keys: Mapping[str, int],
    policy: str,
    mode: str,
    speed: float,
    seed: int,
    show: Callable[[str], Callable[[int, int], None]] | None,
) -> Result:
    progress = None if show is None else show(policy)
    if mode == "live":
        from freellm.sim.live import replay_live

        return await replay_live(trace, catalog, keys, speed=speed, seed=seed, progress=progress)
    return replay(trace, catalog, keys, policy=policy, seed=seed, progress=progress)


def _suggest(
    trace: Trace, catalog: Catalog, keys: Mapping[str, int], seed: int
) -> list[tuple[str, int]]:
    """Requests served with one more key of each provider the chain uses, best first."""
    providers = sorted({target.provider for target in catalog.chain_targets})
    served = []
    for provider in providers:
        more = dict(keys)
        more[provider] = more.get(provider, 0) + 1
        served.append((provider, replay(trace, catalog, more, seed=seed).served))
    return sorted(served, key=lambda item: (-item[1], item[0]))


def _progress(err: TextIO) -> Callable[[str], Callable[[int, int], None]] | None:
    """A progress bar on a terminal; nothing when standard error is not one."""
    if not err.isatty():
        return None

    def bar(label: str) -> Callable[[int, int], None]:
        def show(done: int, total: int) -> None:
            err.write(progress_bar(done, total, f"{label:<12}"))
            if done >= total:
                err.write("\n")
            err.flush()

        return show

    return bar


async def export_trace(
    data_dir: Path, *, since: str | None, output: Path | None, now: float, out: TextIO
) -> int:
    """The requests this instance logged (shapes only, never any text) as a freellm trace."""
    start = 0.0 if since is None else parse_since(since, now=now)
    if not (data_dir / "freellm.db").is_file():
        raise ReplayError(f"no freellm database in {data_dir}")
    async with open_store(data_dir / "freellm.db") as store:
        rows = await store.requests_since(start)
    trace = trace_from_log(rows)
    text = dump_trace(trace)
    if output is None:
        out.write(text)
    else:
        await trio.Path(output).write_text(text, encoding="utf-8")
        print(f"{len(trace.requests):,} requests written to {output}", file=sys.stderr)
    return 0
