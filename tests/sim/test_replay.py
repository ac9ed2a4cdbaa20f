"""The core replay: freellm's own request machine over recorded traffic, in virtual time, against
simulated providers; and the ``freellm replay`` / ``export-trace`` commands around it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from freellm.core.catalog import Catalog, apply_config, load_config_text
from freellm.shell.store import RequestRecord, open_store
from freellm.sim.bounds import upper_bound
from freellm.sim.replay import EPOCH, replay
from freellm.sim.trace import Trace, TraceRequest, load_trace, parse_freellm

DATA = Path(__file__).parents[1] / "data" / "traces"
TRACES = {
    "azure-conv": DATA / "azure_llm_2023_conv.csv",
    "azure-code": DATA / "azure_llm_2023_code.csv",
    "mooncake-conv": DATA / "mooncake_conversation.jsonl",
    "mooncake-synth": DATA / "mooncake_synthetic.jsonl",
}
FREELLM = [sys.executable, "-m", "freellm.cli"]

# Two providers with minute and day caps small enough to bind on a few hundred requests.
CONFIG = """
[providers.groq]
dialect = "openai"
base_url = "http://127.0.0.1:9/groq"
[[providers.groq.models]]
id = "small"
rpm = 20
rpd = 400
tpm = 60000
context = 131072

[providers.cerebras]
dialect = "openai"
base_url = "http://127.0.0.1:9/cerebras"
[[providers.cerebras.models]]
id = "big"
rpm = 10
tpm = 200000
tpd = 1000000
context = 131072

[router]
chain = ["groq/small", "cerebras/big"]
"""


def small_catalog() -> Catalog:
    """Two providers with one model each, nothing else."""
    return apply_config(Catalog(), load_config_text(CONFIG))


def synthetic(n: int, *, every_s: float = 0.5, tokens: int = 800) -> Trace:
    return Trace(
        tuple(TraceRequest(i * every_s, tokens, tokens // 4) for i in range(n)), "synthetic"
    )


def test_a_replay_is_the_same_for_the_same_seed() -> None:
    trace = load_trace(TRACES["azure-conv"]).head(600)
    first = replay(trace, small_catalog(), {"groq": 1, "cerebras": 1}, seed=7)
    again = replay(trace, small_catalog(), {"groq": 1, "cerebras": 1}, seed=7)
    assert first.to_data() | {"seconds": 0} == again.to_data() | {"seconds": 0}
    assert first.requests == 600
    assert first.served + first.refused + first.failed == 600


@pytest.mark.parametrize("name", sorted(TRACES))
def test_with_true_caps_as_configured_no_call_breaks_a_cap_or_meets_a_429(name: str) -> None:
    trace = load_trace(TRACES[name]).head(1500)
    result = replay(trace, small_catalog(), {"groq": 2, "cerebras": 1})
    assert result.refused > 0, "the caps should bind on this slice"
    assert result.served > 0
    assert result.cap_violations == 0
    assert result.upstream_429 == 0
    assert result.served <= upper_bound(trace, small_catalog(), {"groq": 2, "cerebras": 1}).served


def test_a_conversation_stays_on_its_model() -> None:
    # Twenty requests fill groq's minute; a conversation that starts then goes to cerebras and
    # stays there when groq has room again, while a new conversation goes to groq.
    filler = tuple(TraceRequest(float(i), 500, 100) for i in range(20))
    later = (
        TraceRequest(20.0, 500, 100, conversation="x"),
        TraceRequest(90.0, 500, 100, conversation="x"),
        TraceRequest(91.0, 500, 100, conversation="y"),
    )
    result = replay(Trace(filler + later, "sticky"), small_catalog(), {"groq": 1, "cerebras": 1})
    assert result.served == 23
    assert result.shares["target"]["cerebras/big"] == pytest.approx(2 / 23)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(0, 600, allow_nan=False), min_size=1, max_size=120),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from(["groq", "cerebras"]),
)
def test_one_more_key_never_serves_less(
    arrivals: list[float], groq: int, cerebras: int, more: str
) -> None:
    trace = Trace(tuple(TraceRequest(at, 3000, 500) for at in sorted(arrivals)), "random arrivals")
    keys = {"groq": groq, "cerebras": cerebras}
    base = replay(trace, small_catalog(), keys)
    keys[more] += 1
    assert replay(trace, small_catalog(), keys).served >= base.served


def test_the_timeline_adds_up_and_shows_capacity() -> None:
    result = replay(synthetic(400), small_catalog(), {"groq": 1, "cerebras": 1})
    timeline = result.timeline
    assert sum(m["arrivals"] for m in timeline) == 400
    assert sum(m["served"] for m in timeline) == result.served
    assert sum(m["refused"] for m in timeline) == result.refused
    assert timeline[0]["capacity_left"]["rpm"] == 30  # both keys, before the first request
    assert all(sum(m["by_provider"].values()) == m["served"] for m in timeline)


# --- the commands -------------------------------------------------------------------------------


async def freellm(*args: str, cwd: Path) -> tuple[int, str, str]:
    done = await trio.run_process(
        [*FREELLM, *args],
        cwd=cwd,
        env={"FREELLM_DATA_DIR": str(cwd / "data"), "PATH": ""},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_replay_json_has_the_designed_fields_with_every_baseline(tmp_path: Path) -> None:
    config = tmp_path / "freellm.toml"
    await trio.Path(config).write_text(CONFIG)
    code, out, err = await freellm(
        "replay", str(TRACES["azure-code"]), "--config", str(config),
        "--keys", "groq=1", "cerebras=1", "--policy", "all", "--json",
        "--report", str(tmp_path / "out.html"), cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    for field in ("requests", "served", "refused", "failed", "upstream_429", "cap_violations",
                  "upper_bound", "policy", "mode", "seconds", "baselines"):  # fmt: skip
        assert field in data, field
    assert data["policy"] == "freellm"
    assert data["mode"] == "core"
    assert data["strategy"] == "chain"
    # The other strategy of freellm's own, then the other routers.
    assert set(data["baselines"]) == {"freellm-capacity", "first-fit", "round-robin", "least-used"}
    assert data["baselines"]["freellm-capacity"]["strategy"] == "capacity"
    for result in [data, *data["baselines"].values()]:
        assert result["served"] <= data["upper_bound"]
        assert result["served"] + result["refused"] + result["failed"] == data["requests"]
    others = [b for name, b in data["baselines"].items() if not name.startswith("freellm")]
    assert data["served"] >= max(b["served"] for b in others)
    page = (tmp_path / "out.html").read_text()
    assert "uPlot" in page
    # Self-contained: nothing is loaded from anywhere (the library's banner names its home).
    assert re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) is None
    assert "<script src" not in page
    assert "<link" not in page


async def test_replay_prints_a_table_and_suggestions(tmp_path: Path) -> None:
    config = tmp_path / "freellm.toml"
    await trio.Path(config).write_text(CONFIG)
    code, out, err = await freellm(
        "replay", str(TRACES["azure-conv"]), "--config", str(config),
        "--keys", "groq=1", "--suggest", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "upper bound" in out
    assert "one more key of" in out
    lines = out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("one more key"))
    ranked = [line.split() for line in lines[start + 1 :]]
    assert {row[0] for row in ranked} == {"groq", "cerebras"}  # the providers of the chain
    gains = [int(row[-1].replace(",", "")) for row in ranked]
    assert gains == sorted(gains, reverse=True)
    assert all(gain >= 0 for gain in gains)


async def test_replay_says_plainly_what_is_wrong(tmp_path: Path) -> None:
    code, _, err = await freellm("replay", str(TRACES["azure-conv"]), cwd=tmp_path)
    assert code == 2
    assert "--keys PROVIDER=N" in err
    code, _, err = await freellm(
        "replay", str(tmp_path / "nope.csv"), "--keys", "groq=1", cwd=tmp_path
    )
    assert code == 2
    assert "nope.csv" in err
    code, _, err = await freellm(
        "replay", str(TRACES["azure-conv"]), "--keys", "nobody=1", cwd=tmp_path
    )
    assert code == 2
    assert "no provider 'nobody'" in err


async def test_export_trace_writes_the_logged_shapes_and_replays(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    await trio.Path(data_dir).mkdir()
    async with open_store(data_dir / "freellm.db") as store:
        for n in range(5):
            store.log_request(
                RequestRecord(
                    id=f"req_{n}", at=EPOCH + n * 10, model="auto", routed_via="groq/small",
                    status=200, latency_ms=20.0, prompt_tokens=100 + n, completion_tokens=10,
                    attempts=1, stream=False, session=f"s{n % 2}", error="secret prompt text?",
                )
            )  # fmt: skip
        await store.flush()
    out_file = tmp_path / "mine.jsonl"
    code, _, err = await freellm("export-trace", "-o", str(out_file), cwd=tmp_path)
    assert code == 0, err
    trace = parse_freellm(out_file.read_text())
    assert [r.prompt_tokens for r in trace.requests] == [100, 101, 102, 103, 104]
    assert [r.at for r in trace.requests] == [0, 10, 20, 30, 40]
    assert "secret" not in out_file.read_text()
    config = tmp_path / "freellm.toml"
    await trio.Path(config).write_text(CONFIG)
    code, out, err = await freellm(
        "replay", str(out_file), "--config", str(config), "--keys", "groq=1", "--json", cwd=tmp_path
    )
    assert code == 0, err
    assert json.loads(out)["served"] == 5
