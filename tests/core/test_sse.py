"""The SSE decoder: any split of a stream gives the same events."""

from hypothesis import given
from hypothesis import strategies as st

from freellm.core.sse import Decoder, Event, encode

STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"1","choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b"event: error\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b'data: {"choices":[]}\r\rdata: [DONE]\n\n'
)
EXPECTED = [
    Event('{"id":"1","choices":[{"delta":{"content":"Hel"}}]}'),
    Event("line one\nline two", event="error"),
    Event('{"choices":[]}'),
    Event("[DONE]"),
]


def test_decodes_data_events_comments_and_every_line_ending() -> None:
    decoder = Decoder()
    assert decoder.feed(STREAM) == EXPECTED
    assert decoder.comments == 1
    assert EXPECTED[-1].done


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int]) -> None:
    decoder = Decoder()
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(STREAM)]:
        events += decoder.feed(STREAM[start:cut])
        start = cut
    assert events == EXPECTED


def test_a_stream_cut_before_its_blank_line_still_yields_its_last_event() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: partial") == []
    assert decoder.close() == [Event("partial")]


@given(st.binary(max_size=300))
def test_never_raises_on_any_bytes(data: bytes) -> None:
    decoder = Decoder()
    decoder.feed(data)
    decoder.close()


# What goes on the wire is UTF-8: lone surrogates (which JSON text never carries raw, see
# freellm.core.wire) are not events' text.
unicode_text = st.characters(blacklist_categories=["Cs"])


@given(
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
        max_size=50,
    ),
    st.text(alphabet=unicode_text, max_size=80),
)
def test_encode_round_trips_through_the_decoder(event: str, data: str) -> None:
    data = data.replace("\r", "")
    assert Decoder().feed(encode(data, event=event)) == [Event(data, event=event)]
