"""The SSE decoder: any split of a stream gives the same events, in linear time, up to a bound."""

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freellm.core.sse import DEFAULT_MAX_EVENT_BYTES, Decoder, Event, EventTooLarge, encode

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


# --- any split, any line ending ------------------------------------------------------------------


def decode(stream: bytes, cuts: Iterable[int] = (), **kwargs: int) -> tuple[list[Event], int]:
    """The events and the comment count of ``stream`` fed in pieces cut at ``cuts``, then closed."""
    decoder = Decoder(**kwargs)
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        events += decoder.feed(stream[start:cut])
        start = cut
    events += decoder.close()
    return events, decoder.comments


ENDINGS = ("\n", "\r\n", "\r")
value = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]))
field = st.one_of(
    st.tuples(st.sampled_from(["data", "event", "comment"]), value),
    # An id holding NUL is ignored by the standard; the model below does not bother with it.
    st.tuples(st.just("id"), value.filter(lambda v: "\0" not in v)),
    st.just(("blank", "")),
)


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[Event], int]:
    """A stream of data, event, id and comment lines with mixed line endings, what it means,
    and how many comments it holds."""
    lines = [*draw(st.lists(field, max_size=30)), ("blank", "")]
    text, ending = [], ""
    events: list[Event] = []
    data: list[str] = []
    event: str | None = None
    id_: str | None = None
    for name, content in lines:
        # CR then an LF-ended blank line reads as one CRLF, so that pair is not drawn.
        after_cr = ending == "\r" and name == "blank"
        ending = draw(st.sampled_from(ENDINGS[1:] if after_cr else ENDINGS))
        if name == "blank":
            text.append(ending)
            if data or event is not None:
                events.append(Event("\n".join(data), event, id_))
            data, event = [], None
            continue
        text.append(f"{'' if name == 'comment' else name}: {content}{ending}")
        if name == "data":
            data.append(content)
        elif name == "event":
            event = content
        elif name == "id":
            id_ = content
    comments = sum(name == "comment" for name, _ in lines)
    return "".join(text).encode(), events, comments


@given(sse_streams(), st.data())
def test_any_sse_text_split_anywhere_gives_the_events_it_holds(
    stream: tuple[bytes, list[Event], int], data: st.DataObject
) -> None:
    text, events, comments = stream
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=len(text) + 1))
    assert decode(text) == (events, comments)
    assert decode(text, cuts) == (events, comments)


def test_a_crlf_split_between_its_cr_and_lf_is_one_line_ending() -> None:
    # Were the CR taken for a whole line ending, the LF after it would end the event early.
    decoder = Decoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\n") == [Event("a\nb")]


# Bytes rich in line endings, field names and halves of a two-byte UTF-8 character.
wire_bytes = st.lists(
    st.sampled_from(
        [b"\r", b"\n", b"\r\n", b"data:", b"event:", b"id:", b":", b" ", b"x", b"\xc3"]
    ),
    max_size=60,
).map(b"".join)


@given(wire_bytes, st.data(), st.one_of(st.none(), st.integers(0, 40)))
def test_any_split_of_any_bytes_decodes_or_fails_as_one_piece_does(
    stream: bytes, data: st.DataObject, limit: int | None
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    bound = {} if limit is None else {"max_event_bytes": limit}

    def outcome(cuts: Iterable[int]) -> tuple[list[Event], int] | str:
        try:
            return decode(stream, cuts, **bound)
        except EventTooLarge:
            return "too large"

    assert outcome(cuts) == outcome(())


# --- linear time -------------------------------------------------------------------------------

# 10 MiB of text with two-byte characters in it, so that cuts fall inside them too.
BIG_DATA = ("streamed tokens, ünïcödé too; " * (10 * 2**20 // 32 + 1))[: 10 * 2**20]
BIG_STREAM = f"data: {BIG_DATA}\n\n".encode()


# The decoder this replaced copied and rescanned its whole buffer on every feed, quadratic in the
# pieces of a long line. A linear one decodes each example here in tens of milliseconds, so a few
# examples keep the file fast.
@settings(max_examples=8)
@given(st.lists(st.integers(0, len(BIG_STREAM)), min_size=4, max_size=300))
def test_a_10_mb_data_line_split_anywhere_is_one_event(cuts: list[int]) -> None:
    events, _ = decode(BIG_STREAM, cuts)
    assert len(events) == 1
    assert events[0].data == BIG_DATA


# --- the bound ---------------------------------------------------------------------------------

LIMIT = 64


@given(
    st.sampled_from([b"data: ", b"event: ", b": ", b"retry: "]),
    st.sampled_from([b"", b"\n", b"\r\n", b"\r"]),
    st.data(),
)
def test_a_line_longer_than_the_bound_raises_in_one_chunk_or_many(
    head: bytes, ending: bytes, data: st.DataObject
) -> None:
    line = head + b"x" * (LIMIT + 1 - len(head))
    stream = b"data: before\n\n" + line + ending
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    with pytest.raises(EventTooLarge, match=f"{LIMIT + 1} bytes"):
        decode(stream, cuts, max_event_bytes=LIMIT)


@given(st.lists(st.integers(0, 3 * LIMIT), max_size=10))
def test_data_lines_of_one_event_adding_up_past_the_bound_raise(cuts: list[int]) -> None:
    half = b"data: " + b"x" * (LIMIT // 2 - 6) + b"\n"  # two make exactly LIMIT bytes
    with pytest.raises(EventTooLarge, match=f"more than the {LIMIT} allowed"):
        decode(half + half + b"data:\n\n", cuts, max_event_bytes=LIMIT)


@given(st.lists(st.integers(0, 4 * LIMIT), max_size=10))
def test_events_just_under_the_bound_decode(cuts: list[int]) -> None:
    half = b"data: " + b"x" * (LIMIT // 2 - 6)
    full = b"data: " + b"y" * (LIMIT - 6)
    # The bound is per event: each of these is LIMIT bytes, together they are far more.
    stream = (
        half + b"\r\n" + half + b"\r\n\r\n" + full + b"\r\r" + b": " + b"z" * (LIMIT - 2) + b"\n"
    )
    events, comments = decode(stream, cuts, max_event_bytes=LIMIT)
    x, y = "x" * (LIMIT // 2 - 6), "y" * (LIMIT - 6)
    assert events == [Event(f"{x}\n{x}"), Event(y)]
    assert comments == 1


def test_a_decoder_that_raised_refuses_everything_after() -> None:
    decoder = Decoder(max_event_bytes=LIMIT)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: " + b"x" * LIMIT)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"\n\ndata: small\n\n")
    with pytest.raises(EventTooLarge):
        decoder.close()


def test_the_default_bound_is_16_mib() -> None:
    assert DEFAULT_MAX_EVENT_BYTES == 16 * 2**20
    decoder = Decoder()
    assert decoder.feed(b"data: " + b"x" * (DEFAULT_MAX_EVENT_BYTES - 6)) == []
    with pytest.raises(EventTooLarge, match=f"{DEFAULT_MAX_EVENT_BYTES + 1} bytes"):
        decoder.feed(b"x")
