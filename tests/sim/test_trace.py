"""Traces: the importers on slices of real traces, freellm's own format, the helpers, the request
log as a trace, and ``--since``."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.shell.store import RequestRecord, open_store
from freellm.sim.trace import (
    AZURE,
    CsvMapping,
    Trace,
    TraceError,
    TraceRequest,
    detect_format,
    dump_trace,
    load_trace,
    parse_azure,
    parse_csv,
    parse_freellm,
    parse_mooncake,
    parse_since,
    trace_from_log,
)

DATA = Path(__file__).parent.parent / "data" / "traces"
AZURE_CONV = DATA / "azure_llm_2023_conv.csv"
AZURE_CODE = DATA / "azure_llm_2023_code.csv"
MOONCAKE_CONV = DATA / "mooncake_conversation.jsonl"
MOONCAKE_SYNTH = DATA / "mooncake_synthetic.jsonl"


def times_from_zero(trace: Trace) -> bool:
    return trace.requests[0].at == 0.0 and all(a.at <= b.at for a, b in pairwise(trace.requests))


def by_conversation(trace: Trace) -> dict[str | None, list[int]]:
    groups: dict[str | None, list[int]] = defaultdict(list)
    for index, request in enumerate(trace.requests):
        groups[request.conversation].append(index)
    return groups


# --- Azure --------------------------------------------------------------------------------------


def test_the_azure_conversation_slice_reads_every_row_timed_from_the_first() -> None:
    trace = load_trace(AZURE_CONV)
    assert len(trace.requests) == 4_424
    assert trace.source == "azure_llm_2023_conv.csv"
    # 2023-11-16 18:15:46.6805900,374,44
    assert trace.requests[0] == TraceRequest(0.0, 374, 44)
    # 2023-11-16 18:30:46.5624780,181,187: 14 min 59.8818880 s later
    assert trace.requests[-1] == TraceRequest(899.881888, 181, 187)
    assert trace.requests[1].at == 4.314579  # 18:15:50.9951690
    assert times_from_zero(trace)
    assert trace.conversations == 4_424  # each request on its own
    assert all(r.conversation is None and r.model == "auto" for r in trace.requests)


def test_the_azure_code_slice_reads_every_row_timed_from_the_first() -> None:
    trace = parse_azure(AZURE_CODE.read_text())
    assert len(trace.requests) == 2_598
    assert trace.requests[0] == TraceRequest(0.0, 4808, 10)  # 18:17:03.9799600
    assert trace.requests[-1] == TraceRequest(899.857259, 2928, 10)  # 18:32:03.8372190
    assert times_from_zero(trace)
    assert trace.duration == 899.857259


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("2023-11-16 18:15:47.1,abc,5", "ContextTokens", "whole number"),
        ("2023-11-16 18:15:47.1,12,-5", "GeneratedTokens", "whole number"),
        ("2023-11-16 25:15:47.1,12,5", "TIMESTAMP", "ISO-8601"),
        ("2023-02-30 18:15:47.1,12,5", "TIMESTAMP", "ISO-8601"),
        ("yesterday,12,5", "TIMESTAMP", "ISO-8601"),
    ],
)
def test_a_bad_azure_row_names_its_line_and_column(row: str, field: str, message: str) -> None:
    text = f"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n{row}\n"
    with pytest.raises(TraceError, match=message) as caught:
        parse_azure(text)
    assert caught.value.line == 3
    assert caught.value.field == field
    assert str(caught.value).startswith(f"line 3: {field}: ")


def test_an_azure_row_with_a_missing_field_is_an_error_not_skipped() -> None:
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.68,374,44\n"
        "\n"
        "2023-11-16 18:15:47.68,374\n"
    )
    with pytest.raises(TraceError, match="line 4: 2 fields, the header has 3"):
        parse_azure(text)


def test_azure_skips_blank_lines_and_sorts_rows_out_of_order() -> None:
    trace = parse_azure(
        "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        "2023-11-16 18:15:47.5000000,2,20\r\n"
        "\r\n"
        "2023-11-16 18:15:46.0000000,1,10\r\n"
    )
    assert trace.requests == (TraceRequest(0.0, 1, 10), TraceRequest(1.5, 2, 20))


def test_a_csv_without_the_azure_columns_is_refused_naming_the_column() -> None:
    with pytest.raises(TraceError, match=r"line 1: no column 'TIMESTAMP' .* time, in, out"):
        parse_azure("time,in,out\n1,2,3\n")


# --- Mooncake -----------------------------------------------------------------------------------


def test_the_mooncake_conversation_slice_reads_every_row() -> None:
    trace = load_trace(MOONCAKE_CONV)
    assert len(trace.requests) == 1_171
    assert trace.requests[0] == TraceRequest(0.0, 6758, 500, "c1")
    assert trace.requests[-1].at == 2118.0
    assert (trace.requests[-1].prompt_tokens, trace.requests[-1].completion_tokens) == (1904, 33)
    assert times_from_zero(trace)
    assert trace.conversations == 937


def test_a_mooncake_row_that_extends_an_earlier_one_joins_its_conversation() -> None:
    trace = parse_mooncake(MOONCAKE_CONV.read_text())
    lines = MOONCAKE_CONV.read_text().splitlines()
    earlier, later = json.loads(lines[896]), json.loads(lines[1163])  # lines 897 and 1164
    # Checked by hand: line 897's 13 blocks (6,656 tokens: whole blocks) begin line 1164's 25.
    assert later["hash_ids"][:13] == earlier["hash_ids"]
    assert len(later["hash_ids"]) == 25
    conversation = trace.requests[896].conversation
    assert trace.requests[1163].conversation == conversation
    assert 1163 in by_conversation(trace)[conversation]
    # Lines 41, 262, 501 and 703 send the same four blocks: one conversation, four turns.
    assert by_conversation(trace)[trace.requests[40].conversation] == [40, 261, 500, 702]
    # Every row shares block 0 (a system prompt) with the first: that alone extends nothing.
    assert trace.requests[1].conversation == "c2"


def test_the_mooncake_synthetic_slice_keeps_its_conversations_whole() -> None:
    trace = load_trace(MOONCAKE_SYNTH)
    assert len(trace.requests) == 1_296
    assert trace.conversations == 1_190
    assert trace.requests[0] == TraceRequest(0.0, 40160, 6, "c1")
    assert trace.requests[-1].at == 866.851
    assert times_from_zero(trace)
    # Lines 16 and 75 send the same six blocks: one conversation (with the turns that grow it).
    assert {15, 74} <= set(by_conversation(trace)[trace.requests[15].conversation])


def mooncake(*rows: tuple[int, list[int]]) -> str:
    return "".join(
        json.dumps({"timestamp": t, "input_length": 10, "output_length": 1, "hash_ids": ids}) + "\n"
        for t, ids in rows
    )


def test_the_deepest_earlier_row_wins_and_a_shorter_later_row_starts_afresh() -> None:
    # A row continues an earlier one when that row's full blocks (all but its last, usually
    # partial, block), at least two of them, begin this row's list.
    trace = parse_mooncake(
        mooncake(
            (0, [1, 2, 3, 4, 5]),  # c1; later rows may extend [1, 2, 3, 4]
            (10, [1, 2, 9]),  # [1, 2, 3, 4] does not begin it: c2; may be extended by [1, 2]
            (20, [1, 2, 3, 4, 7]),  # extends [1, 2] (c2) and [1, 2, 3, 4] (c1): the deepest wins
            (30, [1, 2, 8, 8]),  # extends [1, 2]: c2
            (40, [1, 6]),  # shares one block only: c3 (and one full block extends nothing)
            (50, [1, 6, 7]),  # so this is c4
            (60, []),  # no blocks: a conversation of its own
            (70, [5, 5, 5]),  # shares no prefix: c6
        )
    )
    assert [r.conversation for r in trace.requests] == [
        *("c1", "c2", "c1", "c2", "c3", "c4", "c5", "c6")
    ]
    assert [r.at for r in trace.requests] == [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"timestamp": 5, "input_length": 1, "output_length": 2', None, "not JSON"),
        ("[1, 2]", None, "expected a JSON object"),
        ('{"timestamp": 5, "input_length": 1, "output_length": 2}', "hash_ids", "a list"),
        (
            '{"timestamp": 5, "input_length": 1.5, "output_length": 2, "hash_ids": []}',
            "input_length",
            "whole number",
        ),
        (
            '{"timestamp": 5, "input_length": 1, "output_length": true, "hash_ids": []}',
            "output_length",
            "whole number",
        ),
        (
            '{"timestamp": "5", "input_length": 1, "output_length": 2, "hash_ids": []}',
            "timestamp",
            "finite number",
        ),
        (
            '{"timestamp": 5, "input_length": 1, "output_length": 2, "hash_ids": [1, "x"]}',
            "hash_ids",
            "whole numbers",
        ),
    ],
)
def test_a_bad_mooncake_row_names_its_line_and_field(
    line: str, field: str | None, message: str
) -> None:
    text = mooncake((0, [1])) + "\n" + line + "\n"
    with pytest.raises(TraceError, match=message) as caught:
        parse_mooncake(text)
    assert (caught.value.line, caught.value.field) == (3, field)


# --- freellm's own format -----------------------------------------------------------------------


def test_a_dump_leaves_defaults_out_and_reads_back() -> None:
    trace = Trace(
        (
            TraceRequest(0.0, 374, 44),
            TraceRequest(1.25, 10, 2, "c1", 256, tools=True, json=True, model="groq/llama"),
        ),
        "test",
    )
    text = dump_trace(trace)
    assert text == (
        '{"freellm_trace":1,"source":"test","requests":2}\n'
        '{"at":0.0,"prompt_tokens":374,"completion_tokens":44}\n'
        '{"at":1.25,"conversation":"c1","prompt_tokens":10,"completion_tokens":2,"max_tokens":256,'
        '"tools":true,"json":true,"model":"groq/llama"}\n'
    )
    assert parse_freellm(text) == trace


def test_the_header_may_be_spaced_and_keys_in_any_order() -> None:
    text = (
        '{"freellm_trace": 1, "source": "s", "requests": 1}\n'
        '{"completion_tokens": 3, "at": 2, "prompt_tokens": 1}\n'
    )
    assert parse_freellm(text) == Trace((TraceRequest(2.0, 1, 3),), "s")


requests_ = st.builds(
    TraceRequest,
    at=st.floats(0, 1e7, allow_nan=False),
    prompt_tokens=st.integers(0, 10**7),
    completion_tokens=st.integers(0, 10**6),
    conversation=st.none() | st.text(),
    max_tokens=st.none() | st.integers(0, 10**6),
    tools=st.booleans(),
    images=st.booleans(),
    json=st.booleans(),
    model=st.text(min_size=1),
)
traces = st.builds(
    lambda requests, source: Trace(tuple(sorted(requests, key=lambda r: r.at)), source),
    st.lists(requests_, max_size=20),
    st.text(),
)


@given(traces)
def test_dump_and_parse_round_trip_exactly(trace: Trace) -> None:
    text = dump_trace(trace)
    assert parse_freellm(text) == trace
    assert dump_trace(parse_freellm(text)) == text
    assert detect_format(text) == "freellm"


def header(requests: int = 1, **extra: object) -> str:
    return json.dumps({"freellm_trace": 1, "source": "s", "requests": requests, **extra})


def row(**fields: object) -> str:
    base: dict[str, object] = {"at": 0, "prompt_tokens": 1, "completion_tokens": 1}
    return json.dumps({key: value for key, value in {**base, **fields}.items() if value != "-"})


@pytest.mark.parametrize(
    ("lines", "line", "field", "message"),
    [
        ([row()], 1, None, "expected the header"),
        ([header(freellm_trace=2)], 1, "freellm_trace", "version 2"),
        ([header(0, x=1)], 1, "x", "unknown key"),
        ([header(0, source=5)], 1, "source", "a string"),
        ([header(-1)], 1, "requests", "whole number"),
        ([header(), row(text="hi")], 2, "text", "unknown key"),
        ([header(2), row(at=5), row(at=4)], 3, "at", "order of arrival"),
        ([header(), row(at=-1)], 2, "at", "order of arrival"),
        ([header(), row(at=float("nan"))], 2, "at", "finite"),
        ([header(), row(prompt_tokens="-")], 2, "prompt_tokens", "whole number"),
        ([header(), row(max_tokens=2.5)], 2, "max_tokens", "whole number"),
        ([header(), row(tools=1)], 2, "tools", "true or false"),
        ([header(), row(model="")], 2, "model", "a model name"),
        ([header(), row(conversation=7)], 2, "conversation", "a string or null"),
        ([header(3), row()], 2, None, "1 requests, the header says 3"),
        ([], 1, None, "empty"),
    ],
)
def test_a_bad_freellm_trace_names_its_line_and_field(
    lines: list[str], line: int, field: str | None, message: str
) -> None:
    with pytest.raises(TraceError, match=message) as caught:
        parse_freellm("\n".join(lines))
    assert (caught.value.line, caught.value.field) == (line, field)


# --- any CSV ------------------------------------------------------------------------------------


def test_a_csv_mapping_reads_seconds_by_default_timed_from_the_earliest() -> None:
    text = "t,p,c,extra\n1700000010.5,1,2,x\n1700000010,3,4,y\n"
    trace = parse_csv(text, "csv:at=t,prompt=p,completion=c")
    assert trace.requests == (TraceRequest(0.0, 3, 4), TraceRequest(0.5, 1, 2))
    assert trace.source == "csv"


def test_a_csv_mapping_reads_milliseconds_and_the_optional_columns() -> None:
    text = 'ms,session,model,in,out\n0,a,,5,6\n1500,,groq/x,7,8\n2250," a ",m,9,10\n'
    trace = parse_csv(
        text, "csv: at=ms, prompt=in, completion=out, conversation=session, model=model, time=ms"
    )
    assert trace.requests == (
        TraceRequest(0.0, 5, 6, "a"),
        TraceRequest(1.5, 7, 8, None, model="groq/x"),
        TraceRequest(2.25, 9, 10, "a", model="m"),
    )
    assert trace.conversations == 2


def test_a_csv_mapping_reads_iso_times_with_their_zones() -> None:
    text = (
        "when,p,c\n"
        "2024-03-01T12:00:00Z,1,1\n"
        "2024-03-01 13:00:00.25+01:00,2,2\n"  # 12:00:00.25 UTC
        "2024-03-01T12:00:01.123456789123,3,3\n"  # digits past the ninth are dropped
    )
    trace = parse_csv(text, CsvMapping("when", "p", "c", time="iso"))
    assert [r.at for r in trace.requests] == [0.0, 0.25, 1.123456789]


def test_azure_is_a_csv_mapping() -> None:
    assert parse_csv(AZURE_CODE.read_text(), AZURE) == parse_azure(
        AZURE_CODE.read_text(), source="csv"
    )


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("csv:at=t,prompt=p", "completion missing"),
        ("csv:at=t,prompt=p,completion=c,time=h", "time=h: expected s, ms or iso"),
        ("csv:at=t,prompt=p,completion=c,colour=red", "'colour=red'"),
        ("csv:at=t,at=u,prompt=p,completion=c", "'at' twice"),
        ("csv:at=,prompt=p,completion=c", "'at='"),
    ],
)
def test_a_bad_csv_mapping_says_what_is_wrong(mapping: str, message: str) -> None:
    with pytest.raises(TraceError, match=message) as caught:
        CsvMapping.parse(mapping)
    assert caught.value.field == f"csv mapping {mapping!r}"


def test_a_bad_csv_time_names_its_line() -> None:
    with pytest.raises(TraceError, match="line 3: t: expected a finite number, got 'inf'"):
        parse_csv("t,p,c\n1,1,1\ninf,1,1\n", "csv:at=t,prompt=p,completion=c")


def test_a_csv_with_an_optional_column_missing_is_refused() -> None:
    with pytest.raises(TraceError, match="no column 'user' \\(for conversation=\\)"):
        parse_csv("t,p,c\n1,1,1\n", "csv:at=t,prompt=p,completion=c,conversation=user")


def test_an_empty_csv_is_refused() -> None:
    with pytest.raises(TraceError, match="empty"):
        parse_csv("\n\n", "csv:at=t,prompt=p,completion=c")


# --- finding the format -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (AZURE_CONV, "azure"),
        (AZURE_CODE, "azure"),
        (MOONCAKE_CONV, "mooncake"),
        (MOONCAKE_SYNTH, "mooncake"),
    ],
)
def test_the_format_is_found_from_the_start_of_a_file(path: Path, expected: str) -> None:
    start = path.read_text()[:60]  # a Mooncake line cut short still tells
    assert detect_format(start) == expected


def test_a_file_of_no_known_format_says_to_pass_format(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="--format azure\\|mooncake\\|freellm\\|csv:MAPPING"):
        detect_format("when,prompt,completion\n1,2,3\n")
    path = tmp_path / "trace.txt"
    path.write_text('{"a": 1}\n')
    with pytest.raises(TraceError, match=f"^{re.escape(str(path))}: line 1: cannot tell"):
        load_trace(path)


def test_load_trace_reads_a_dumped_trace_and_a_mapped_csv(tmp_path: Path) -> None:
    trace = load_trace(MOONCAKE_SYNTH).head(50)
    path = tmp_path / "out.jsonl"
    path.write_text(dump_trace(trace))
    assert load_trace(path) == trace
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("\ufeffs,a,b\n3,1,2\n")  # a byte-order mark, as spreadsheets write
    mapped = load_trace(csv_path, "csv:at=s,prompt=a,completion=b")
    assert mapped == Trace((TraceRequest(0.0, 1, 2),), "mine.csv")


def test_load_trace_errors_start_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,x,1\n")
    with pytest.raises(
        TraceError, match=f"^{re.escape(str(path))}: line 2: ContextTokens: "
    ) as caught:
        load_trace(path)
    assert (caught.value.line, caught.value.field) == (2, "ContextTokens")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(TraceError, match="not UTF-8"):
        load_trace(path)
    with pytest.raises(TraceError, match="--format: unknown format 'parquet'"):
        load_trace(AZURE_CODE, "parquet")


# --- the helpers --------------------------------------------------------------------------------


def test_window_slices_by_time_and_counts_from_its_start() -> None:
    trace = load_trace(AZURE_CONV)
    window = trace.window(60, 120)
    assert window.requests
    assert all(0 <= r.at < 60 for r in window.requests)
    inside = [r for r in trace.requests if 60 <= r.at < 120]
    assert window.requests == tuple(attrs.evolve(r, at=r.at - 60) for r in inside)
    assert window.source == "azure_llm_2023_conv.csv, 60-120 s"
    assert trace.window(0, 1e9).requests == trace.requests
    with pytest.raises(ValueError, match="0 <= start <= end"):
        trace.window(5, 4)


def test_head_duration_and_conversations() -> None:
    trace = load_trace(MOONCAKE_CONV)
    head = trace.head(41)
    assert head.requests == trace.requests[:41]
    assert head.duration == 12.0  # line 41: timestamp 12000
    assert head.conversations == 41
    assert trace.head(0).duration == 0.0
    with pytest.raises(ValueError, match="n >= 0"):
        trace.head(-1)


def test_subsample_is_deterministic_for_a_seed_and_keeps_conversations_whole() -> None:
    trace = load_trace(MOONCAKE_SYNTH)
    half = trace.subsample(0.5, seed=7)
    assert half == trace.subsample(0.5, seed=7)
    assert half != trace.subsample(0.5, seed=8)
    everything = by_conversation(trace)
    kept = by_conversation(half)
    assert 0.4 < len(kept) / len(everything) < 0.6
    for name in kept:
        assert len(kept[name]) == len(everything[name])  # whole
    assert half.source == "mooncake_synthetic.jsonl, 0.5 of it (seed 7)"


def test_a_larger_fraction_keeps_a_superset_and_the_ends_keep_all_or_none() -> None:
    trace = load_trace(AZURE_CODE)
    small = set(trace.subsample(0.1, seed=1).requests)
    large = set(trace.subsample(0.3, seed=1).requests)
    assert small < large
    assert trace.subsample(1, seed=1).requests == trace.requests
    assert trace.subsample(0, seed=1).requests == ()
    with pytest.raises(ValueError, match="between 0 and 1"):
        trace.subsample(1.5, seed=1)


def test_repeat_plays_the_trace_again_a_minute_after_its_end_as_new_conversations() -> None:
    trace = load_trace(MOONCAKE_SYNTH).subsample(0.1, seed=0)
    thrice = trace.repeat(3)
    n = len(trace.requests)
    assert len(thrice.requests) == 3 * n
    assert thrice.requests[:n] == trace.requests
    step = trace.duration + 60.0
    for copy in (1, 2):
        for original, again in zip(trace.requests, thrice.requests[copy * n :], strict=False):
            assert again.at == original.at + copy * step
            assert again.prompt_tokens == original.prompt_tokens
            assert (again.conversation is None) == (original.conversation is None)
            if original.conversation is not None:
                assert again.conversation == f"{original.conversation}~{copy + 1}"
    assert thrice.conversations == 3 * trace.conversations
    assert thrice.duration == 2 * step + trace.duration
    assert trace.repeat(1) is trace
    with pytest.raises(ValueError, match="times >= 1"):
        trace.repeat(0)


def test_a_trace_out_of_order_is_refused() -> None:
    with pytest.raises(ValueError, match="never decrease"):
        Trace((TraceRequest(2.0, 1, 1), TraceRequest(1.0, 1, 1)), "s")
    with pytest.raises(ValueError, match="finite"):
        Trace((TraceRequest(float("inf"), 1, 1),), "s")


# --- the request log ----------------------------------------------------------------------------


def record(
    i: int, at: float, session: str | None, tokens: tuple[int | None, int | None] = (10, 20)
) -> RequestRecord:
    return RequestRecord(
        id=f"req-{i}",
        at=at,
        model="auto" if i % 2 else "groq/llama-3.3-70b-versatile",
        routed_via="groq/llama-3.3-70b-versatile",
        status=200,
        latency_ms=12.5,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        attempts=1,
        stream=False,
        session=session,
        error="secret text" if i == 3 else None,
    )


def test_the_request_log_becomes_a_trace_of_shapes_only() -> None:
    records = [
        record(1, 1_700_000_100.0, "u:alice@example.com"),
        record(2, 1_700_000_000.0, "h:my-session"),
        record(3, 1_700_000_050.5, "u:alice@example.com", (None, None)),
        record(4, 1_700_000_200.0, None, (7, None)),
    ]
    trace = trace_from_log(records)
    assert trace.requests == (
        TraceRequest(0.0, 10, 20, "c1", model="groq/llama-3.3-70b-versatile"),
        TraceRequest(50.5, 0, 0, "c2"),
        TraceRequest(100.0, 10, 20, "c2"),
        TraceRequest(200.0, 7, 0, None, model="groq/llama-3.3-70b-versatile"),
    )
    assert trace.source == ("freellm request log: 4 requests, 2 without token counts (taken as 0)")
    text = dump_trace(trace)
    for private in ("alice", "my-session", "secret", "req-"):
        assert private not in text
    assert trace_from_log([]) == Trace((), "freellm request log: 0 requests")


async def test_requests_since_reads_the_log_from_a_time_in_order(tmp_path: Path) -> None:
    async with open_store(tmp_path / "freellm.db") as store:
        for i, at in enumerate([500.0, 100.0, 300.0, 200.0, 300.0]):
            store.log_request(record(i, at, f"h:{i}"))
        await store.flush()
        store.log_request(record(9, 400.0, "h:9"))  # pending: not written yet
        since = await store.requests_since(200.0)
        assert [r.at for r in since] == [200.0, 300.0, 300.0, 500.0]
        assert {r.id for r in since} == {"req-0", "req-2", "req-3", "req-4"}
        assert since[0] == record(3, 200.0, "h:3")
        assert await store.requests_since(501.0) == []
        trace = trace_from_log(await store.requests_since(0))
    assert [r.at for r in trace.requests] == [0.0, 100.0, 200.0, 200.0, 400.0]


# --- --since ------------------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", NOW - 7 * 86_400),
        ("1.5", NOW - 1.5 * 86_400),
        (" 30d ", NOW - 30 * 86_400),
        ("0", NOW),
        ("2024-05-01", 1_714_521_600.0),
        ("2024-05-01T12:00:00Z", 1_714_564_800.0),
        ("2024-05-01 12:00+02:00", 1_714_557_600.0),
        ("2024-05-01T12:00:00.5", 1_714_564_800.5),
    ],
)
def test_since_is_days_before_now_or_an_iso_date(text: str, expected: float) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize(
    "text", ["", "-3", "last week", "2024-13-01", "2024-05-01T25:00", "7 days"]
)
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(TraceError, match="--since: expected a number of days"):
        parse_since(text, now=NOW)


def test_a_trace_request_is_slotted_and_frozen() -> None:
    request = TraceRequest(0.0, 1, 2)
    assert not hasattr(request, "__dict__")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.at = 1.0  # type: ignore[misc]
