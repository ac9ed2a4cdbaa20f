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
