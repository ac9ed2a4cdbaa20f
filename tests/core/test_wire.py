"""JSON on the wire: any decoded JSON goes back out, lone surrogates included."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from freellm.core import wire

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_what_json_decodes_goes_back_out_unchanged(value: object) -> None:
    assert json.loads(wire.dumps(value)) == value


def test_text_stays_utf8_unless_a_lone_surrogate_needs_escaping() -> None:
    assert wire.dumps({"text": "héllo 😀"}) == '{"text":"héllo 😀"}'.encode()
    half_emoji = json.loads('"\\ud83d"')
    assert wire.dumps({"a": "é", "b": half_emoji}) == b'{"a":"\\u00e9","b":"\\ud83d"}'


@given(json_values)
def test_a_body_decodes_as_json_reads_it(value: object) -> None:
    raw = json.dumps(value).encode()
    assert wire.decode(raw) == json.loads(raw)
    assert wire.decode(b"\xef\xbb\xbf" + raw) == json.loads(raw)  # a leading BOM is let through


@given(st.integers(1, 3000), st.sampled_from(["[", '{"k":']))
def test_a_body_nested_past_the_limit_is_refused_naming_its_field(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + ("" if opener == "[" else "0") + closer * depth
    decoded = wire.decode(f'{{"model": "auto", "deep": {inner}}}'.encode())
    if depth + 1 <= wire.MAX_DEPTH:
        assert isinstance(decoded, dict)
        return
    assert isinstance(decoded, wire.NotJSON)
    assert f"more than {wire.MAX_DEPTH} deep" in decoded.message
    assert decoded.param in ("deep", None)  # None: Python's parser gave up before any field
    if depth < 500:
        assert decoded.param == "deep"


def test_what_python_reads_but_json_is_not_is_refused_saying_what() -> None:
    cases = {
        b'{"a": NaN}': "NaN is not a finite number",
        b'{"a": -Infinity}': "-Infinity is not a finite number",
        b'{"a": -1e999}': "-1e999 is not a finite number",
        b'{"a": "\xff"}': "not valid UTF-8 (byte 7)",
        b'{"a": 1,}': "not valid JSON: Expecting property name enclosed in double quotes",
        b"": "not valid JSON: Expecting value (line 1, column 1)",
        b"1" * 5000: "a number has too many digits",
        b"[" * 100_000: f"more than {wire.MAX_DEPTH} deep",
    }
    for raw, says in cases.items():
        decoded = wire.decode(raw)
        assert isinstance(decoded, wire.NotJSON), raw
        assert says in decoded.message, (raw, decoded)
