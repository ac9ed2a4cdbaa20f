"""How long the core takes to route one request: plan + reserve + settle.

With the full bundled catalog and 5 keys per provider, it times the three steps the dispatch loop
runs for every request, on two states:

- typical: a few minutes of traffic spread over the keys; the first chain entry has room;
- capped:  every key of all but the last few chain entries is at its cap (rpm), so the plan walks
           most of the chain before it finds a slot.

Each case runs under both routing strategies (``[router] strategy``): ``chain`` walks the chain in
order, ``capacity`` prices the candidates (``freellm.core.packing``) as far down the chain as it
must; the last column is capacity's time over chain's (issue 13 holds it to 2x at most). Each
strategy is timed on the state its own traffic left: capacity's holds its histogram of request
sizes and a threshold worked out less than ``freellm.core.demand.STAR_EVERY_S`` ago, as in steady
operation (working it out again scans every key's day budget, tens of microseconds, once per
10 s of traffic, not per request).

Run: ``python bench/core_bench.py [--iterations N]``. Prints a table in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import attrs

from freellm.core import router
from freellm.core.catalog import Strategy
from freellm.core.ledger import Refusal
from freellm.core.outcome import Kind, Outcome
from freellm.shell.config import bundled_catalog

NOW = 1_780_000_000.0
KEYS_PER_PROVIDER = 5
SUCCESS = Outcome(Kind.SUCCESS, 200)


def base_state() -> router.RouterState:
    catalog = bundled_catalog()
    keys = [
        router.Key(p, f"{p}-{i}", f"secret-{p}-{i}")
        for p in catalog.providers
        for i in range(KEYS_PER_PROVIDER)
    ]
    return router.RouterState(router.Topology(catalog, keys))


def with_traffic(
    state: router.RouterState, requests: int, strategy: Strategy
) -> router.RouterState:
    """``state`` after ``requests`` requests of the last few minutes, routed as the proxy would
    under ``strategy`` (capacity's also leave its histogram and a fresh threshold)."""
    request = router.RouteRequest(
        model=router.AUTO, prompt_tokens=600, max_tokens=400, strategy=strategy
    )
    for index in range(requests):
        now = NOW - 300 + index * (300 / requests)
        state = route_once(state, request, now)
    return state


def capped(state: router.RouterState, keep: int) -> router.RouterState:
    """Fill the rpm of every key of every chain entry but the last ``keep``."""
    for target in state.catalog.chain_targets[:-keep]:
        for slot in state.topology.slots[target.provider, target.model.id]:
            while True:
                admitted = router.admit(state, slot, 10, now=NOW - 1)
                if isinstance(admitted, Refusal):
                    break
                state = router.record(
                    admitted.state, admitted.ticket, SUCCESS, tokens=10, now=NOW - 1
                )
                if slot.model.caps.rpm is None and slot.model.caps.rpd is None:
                    break  # no cap to fill: this slot stays available
    return state


def route_once(
    state: router.RouterState, request: router.RouteRequest, now: float
) -> router.RouterState:
    plan = router.plan(state, request, now=now)
    for slot in plan:
        admitted = plan.admit(state, slot, now=now)
        if isinstance(admitted, Refusal):
            plan.refused(slot, admitted)
            continue
        return router.record(admitted.state, admitted.ticket, SUCCESS, tokens=700, now=now)
    raise SystemExit(f"no capacity: {plan.no_capacity()}")


def measure(step: Callable[[], object], iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        step()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args()

    start = base_state()
    typical = {strategy: with_traffic(start, 200, strategy) for strategy in Strategy}
    walked = {strategy: capped(typical[strategy], keep=3) for strategy in Strategy}
    request = router.RouteRequest(model=router.AUTO, prompt_tokens=800, max_tokens=512)
    pinned = attrs.evolve(request, model="groq/llama-3.3-70b-versatile")

    cases = {
        "typical (auto)": (typical, request),
        "typical (auto), a small request": (typical, attrs.evolve(request, prompt_tokens=200)),
        "typical (provider/model)": (typical, pinned),
        "capped: most of the chain full": (walked, request),
    }
    print(
        f"catalog: {len(start.catalog.providers)} providers, "
        f"{len(start.catalog.chain_targets)} chain entries, {KEYS_PER_PROVIDER} keys each; "
        f"{args.iterations} iterations"
    )
    print(
        f"{'case':34} {'strategy':9} {'median us':>10} {'p90 us':>8} {'plan us':>8} "
        f"{'x chain':>8}  candidates"
    )
    for name, (states, base) in cases.items():
        chain_median = 0.0
        for strategy in Strategy:
            state = states[strategy]
            req = attrs.evolve(base, strategy=strategy)
            first = router.plan(state, req, now=NOW)
            slot = next(first)
            skipped = len(first.no_capacity().refusals)  # set aside before the first candidate

            def plan_only(
                state: router.RouterState = state, req: router.RouteRequest = req
            ) -> None:
                next(router.plan(state, req, now=NOW))

            def full(state: router.RouterState = state, req: router.RouteRequest = req) -> None:
                route_once(state, req, NOW)

            measure(full, 500)  # warm up
            samples = measure(full, args.iterations)
            plans = measure(plan_only, args.iterations)
            median = statistics.median(samples)
            if strategy is Strategy.CHAIN:
                chain_median = median
            print(
                f"{name:34} {strategy.value:9} {median:10.1f} "
                f"{statistics.quantiles(samples, n=10)[-1]:8.1f} "
                f"{statistics.median(plans):8.1f} {median / chain_median:8.2f}"
                f"  {skipped:>3} skipped -> {slot.name}"
            )


if __name__ == "__main__":
    main()
