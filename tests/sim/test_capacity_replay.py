"""The capacity strategy replayed on slices of the recorded traces: it serves more than chain
order where token and request caps are mixed, within the caps, with no upstream 429."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from freellm.core.catalog import Catalog, apply_config, load_config_text
from freellm.sim.bounds import upper_bound
from freellm.sim.replay import replay
from freellm.sim.trace import load_trace

DATA = Path(__file__).parents[1] / "data" / "traces"

# Two keys of a token-capped provider first in the chain (30k tokens a day, as Groq caps
# tokens), two of a request-capped one after it (60 a day, as Gemini caps requests): over a
# 15-minute slice, 5% of its conversations need about what they give.
MIXED = """
[providers.tok]
dialect = "openai"
base_url = "http://127.0.0.1:9/tok"
[[providers.tok.models]]
id = "m"
rpm = 30
tpm = 12000
tpd = 30000
context = 131072

[providers.req]
dialect = "openai"
base_url = "http://127.0.0.1:9/req"
[[providers.req.models]]
id = "m"
rpm = 10
rpd = 60
context = 1048576

[router]
chain = ["tok/m", "req/m"]
"""
KEYS = {"tok": 2, "req": 2}


def mixed() -> Catalog:
    return apply_config(Catalog(), load_config_text(MIXED))


@pytest.mark.parametrize(
    ("name", "gain"),
    [("azure_llm_2023_conv.csv", 1.05), ("azure_llm_2023_code.csv", 1.15)],
)
def test_on_mixed_caps_capacity_serves_more_than_the_chain_within_the_caps(
    name: str, gain: float
) -> None:
    trace = load_trace(DATA / name).subsample(0.05, 0)
    chain = replay(trace, mixed(), KEYS, policy="freellm-chain")
    capacity = replay(trace, mixed(), KEYS, policy="freellm-capacity")
    bound = upper_bound(trace, mixed(), KEYS).served
    assert chain.refused > 0, "the day caps should bind on this sample"
    assert capacity.served >= gain * chain.served
    assert capacity.served >= 0.9 * bound
    for result in (chain, capacity):
        assert result.cap_violations == 0
        assert result.upstream_429 == 0
    assert (chain.strategy, capacity.strategy) == ("chain", "capacity")


@pytest.mark.parametrize("name", ["mooncake_conversation.jsonl", "mooncake_synthetic.jsonl"])
def test_where_everything_fits_capacity_serves_it_all_as_the_chain_does(name: str) -> None:
    trace = load_trace(DATA / name).subsample(0.05, 0)
    chain = replay(trace, mixed(), KEYS, policy="freellm-chain")
    capacity = replay(trace, mixed(), KEYS, policy="freellm-capacity")
    assert capacity.served == chain.served == len(trace.requests)
    assert capacity.cap_violations == capacity.upstream_429 == 0


def test_synthetic_played_three_times_binds_the_day_caps_and_capacity_serves_more() -> None:
    # One pass of the 17-minute trace leaves the day caps loose; three in a row (51 minutes)
    # hold them: what capacity keeps of the token-capped keys is asked for.
    trace = load_trace(DATA / "mooncake_synthetic.jsonl").subsample(0.1, 0).repeat(3)
    chain = replay(trace, mixed(), KEYS, policy="freellm-chain")
    capacity = replay(trace, mixed(), KEYS, policy="freellm-capacity")
    assert chain.refused > 0
    assert capacity.served >= 1.1 * chain.served
    assert capacity.served <= upper_bound(trace, mixed(), KEYS).served
    for result in (chain, capacity):
        assert result.cap_violations == result.upstream_429 == 0


async def replay_command(tmp_path: Path, config: str, trace: str, *more: str) -> Any:
    """``freellm replay`` of a 5% sample of ``trace`` on two keys of each provider of
    ``config``, as a user runs it; its JSON."""
    path = tmp_path / "freellm.toml"
    await trio.Path(path).write_text(config)
    done = await trio.run_process(
        [sys.executable, "-m", "freellm.cli", "replay", str(DATA / trace), "--config", str(path),
         "--keys", "tok=2", "req=2", "--sample", "0.05", *more, "--json"],
        cwd=tmp_path,
        env={"FREELLM_DATA_DIR": str(tmp_path / "data"), "PATH": ""},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_replay_repeat_plays_the_sample_again(tmp_path: Path) -> None:
    data = await replay_command(tmp_path, MIXED, "mooncake_synthetic.jsonl", "--repeat", "2")
    sample = load_trace(DATA / "mooncake_synthetic.jsonl").subsample(0.05, 0)
    assert data["requests"] == 2 * len(sample.requests)


async def test_replay_all_with_capacity_configured_compares_it_with_the_chain(
    tmp_path: Path,
) -> None:
    config = MIXED.replace("[router]", '[router]\nstrategy = "capacity"')
    data = await replay_command(tmp_path, config, "azure_llm_2023_code.csv", "--policy", "all")
    assert data["strategy"] == "capacity"
    chain = data["baselines"]["freellm-chain"]
    assert chain["strategy"] == "chain"
    assert data["requests"] == chain["requests"] == 121  # the sample, the same for both
    assert data["served"] > chain["served"]
    assert data["served"] <= data["upper_bound"]
