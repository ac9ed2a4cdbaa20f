import calendar
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core.signals import (
    Ceiling,
    QuotaSignal,
    parse_duration,
    parse_gemini_error,
    parse_ratelimit_headers,
    parse_retry_after,
    parse_zhipu_code,
)

NOW = 1_700_000_000.0

# --- parse_duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("1h2m3s", 3723.0),
        ("500ms", 0.5),
        ("0.5s", 0.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("12.5", 12.5),
        ("0", 0.0),
        ("0s", 0.0),
        (".5s", 0.5),
        ("2m5ms", 120.005),
        ("1.5us", 1.5e-6),
        ("1.5\u00b5s", 1.5e-6),
        ("250ns", 2.5e-7),
        ("7.66S", 7.66),
        ("1H2M3S", 3723.0),
        ("  3s\t", 3.0),
    ],
)
def test_parse_duration_reads_groq_durations_and_bare_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "-1s",
        "-3",
        "-0.5",
        "nan",
        "inf",
        "1e5",
        "1m1m",
        "5s2m",
        "s",
        "ms",
        "h",
        "1 m",
        "1d",
        "1.2.3s",
        "soon",
        "\u0661\u0662s",  # Arabic-Indic digits: not ASCII, not a duration
        "9" * 100 + "s",
    ],
)
def test_parse_duration_returns_none_for_unparseable_text(text: str) -> None:
    assert parse_duration(text) is None


def _groq_format(hours: int, minutes: int, centiseconds: int, *, pad: bool) -> str:
    """Format like Go's time.Duration, with seconds to two decimals as Groq sends them."""
    if not pad and hours == minutes == 0 and 0 < centiseconds < 100:
        return f"{centiseconds * 10}ms"
    seconds = f"{centiseconds // 100}.{centiseconds % 100:02d}".rstrip("0").rstrip(".")
    if pad or hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


@given(
    hours=st.integers(0, 48),
    minutes=st.integers(0, 59),
    centiseconds=st.integers(0, 5999),
    pad=st.booleans(),
)
def test_parse_duration_round_trips_groq_formatted_durations(
    hours: int, minutes: int, centiseconds: int, pad: bool
) -> None:
    text = _groq_format(hours, minutes, centiseconds, pad=pad)
    expected = hours * 3600 + minutes * 60 + centiseconds / 100
    assert parse_duration(text) == pytest.approx(expected, rel=1e-12, abs=1e-9)


@given(millis=st.integers(0, 10**9))
def test_parse_duration_reads_bare_seconds_with_three_decimals(millis: int) -> None:
    text = f"{millis // 1000}.{millis % 1000:03d}"
    assert parse_duration(text) == pytest.approx(millis / 1000, rel=1e-12, abs=1e-12)


@given(st.text())
def test_parse_duration_never_raises_and_never_goes_negative(text: str) -> None:
    result = parse_duration(text)
    assert result is None or result >= 0


# --- parse_retry_after ------------------------------------------------------------------------

# 2015-10-21 07:28:00 UTC, the date of RFC 9110's example.
DATE_EPOCH = float(calendar.timegm((2015, 10, 21, 7, 28, 0)))


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "53"}, 53.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": " 7 "}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after-ms": "-5"}, 0.0),
        ({"retry-after": "0"}, 0.0),
    ],
)
def test_parse_retry_after_reads_delta_seconds_and_milliseconds(
    headers: dict[str, str], seconds: float
) -> None:
    assert parse_retry_after(headers, now=NOW) == seconds


def test_parse_retry_after_reads_an_http_date_relative_to_now() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert parse_retry_after(headers, now=DATE_EPOCH - 10) == 10.0


def test_parse_retry_after_reads_an_http_date_with_an_offset() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 08:28:00 +0100"}
    assert parse_retry_after(headers, now=DATE_EPOCH - 30) == 30.0


def test_parse_retry_after_takes_a_zoneless_date_as_utc() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}
    assert parse_retry_after(headers, now=DATE_EPOCH - 4) == 4.0


def test_parse_retry_after_clamps_a_past_http_date_to_zero() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert parse_retry_after(headers, now=DATE_EPOCH + 3600) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ratelimit-reset-requests": "2s"},
        {"retry-after": ""},
        {"retry-after": "soon"},
        {"retry-after": "nan"},
        {"retry-after": "Wed, 99 Foo 2015 07:28:00 GMT"},
        {"retry-after-ms": "soon"},
    ],
)
def test_parse_retry_after_returns_none_when_absent_or_unparseable(
    headers: dict[str, str],
) -> None:
    assert parse_retry_after(headers, now=NOW) is None


RETRY_NAMES = st.sampled_from(["retry-after", "retry-after-ms"])


@given(
    headers=st.dictionaries(RETRY_NAMES | st.text(), st.text()),
    now=st.floats(0, 4e9),
)
def test_parse_retry_after_never_raises_and_never_goes_negative(
    headers: dict[str, str], now: float
) -> None:
    result = parse_retry_after(headers, now=now)
    assert result is None or result >= 0


# --- parse_ratelimit_headers ------------------------------------------------------------------

GROQ = {
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-limit-tokens": "18000",
    "x-ratelimit-remaining-requests": "14370",
    "x-ratelimit-remaining-tokens": "17997",
    "x-ratelimit-reset-requests": "2m59.5s",
    "x-ratelimit-reset-tokens": "7.25s",
}


def test_groq_headers_give_a_daily_request_and_a_minute_token_ceiling() -> None:
    assert parse_ratelimit_headers(GROQ, now=NOW) == (
        Ceiling("requests", "day", remaining=14370, limit=14400, reset_at=NOW + 179.5),
        Ceiling("tokens", "minute", remaining=17997, limit=18000, reset_at=NOW + 7.25),
    )


def test_groq_resets_read_as_durations_from_providers_md() -> None:
    headers = {**GROQ, "x-ratelimit-reset-requests": "2m59.56s"}
    (requests, _tokens) = parse_ratelimit_headers(headers, now=0.0)
    assert requests.reset_at == pytest.approx(179.56, rel=1e-12)


def test_groq_ceiling_keeps_its_window_when_its_reset_is_garbage() -> None:
    headers = {**GROQ, "x-ratelimit-reset-tokens": "later"}
    assert parse_ratelimit_headers(headers, now=NOW)[1] == Ceiling(
        "tokens", "minute", remaining=17997, limit=18000, reset_at=None
    )


def test_groq_is_recognised_by_its_token_reset_alone() -> None:
    headers = {key: value for key, value in GROQ.items() if key != "x-ratelimit-reset-requests"}
    assert parse_ratelimit_headers(headers, now=NOW) == (
        Ceiling("requests", "day", remaining=14370, limit=14400, reset_at=None),
        Ceiling("tokens", "minute", remaining=17997, limit=18000, reset_at=NOW + 7.25),
    )


def test_mistral_headers_without_resets_give_minute_ceilings() -> None:
    headers = {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-limit-tokens": "500000",
        "x-ratelimit-remaining-tokens": "499000",
    }
    assert parse_ratelimit_headers(headers, now=NOW) == (
        Ceiling("requests", "minute", remaining=1, limit=2, reset_at=None),
        Ceiling("tokens", "minute", remaining=499000, limit=500000, reset_at=None),
    )


CEREBRAS = {
    "x-ratelimit-limit-requests-day": "14400",
    "x-ratelimit-limit-tokens-minute": "60000",
    "x-ratelimit-remaining-requests-day": "14399",
    "x-ratelimit-remaining-tokens-minute": "59000",
    "x-ratelimit-reset-requests-day": "33011.5",
    "x-ratelimit-reset-tokens-minute": "11.5",
}


def test_cerebras_headers_give_the_windows_their_names_state() -> None:
    assert parse_ratelimit_headers(CEREBRAS, now=NOW) == (
        Ceiling("requests", "day", remaining=14399, limit=14400, reset_at=NOW + 33011.5),
        Ceiling("tokens", "minute", remaining=59000, limit=60000, reset_at=NOW + 11.5),
    )


def test_cerebras_minute_requests_and_daily_tokens_are_read_when_present() -> None:
    headers = {
        **CEREBRAS,
        "x-ratelimit-limit-requests-minute": "30",
        "x-ratelimit-remaining-requests-minute": "29",
        "x-ratelimit-reset-requests-minute": "40",
        "x-ratelimit-limit-tokens-day": "1000000",
        "x-ratelimit-remaining-tokens-day": "990000",
    }
    assert parse_ratelimit_headers(headers, now=NOW) == (
        Ceiling("requests", "minute", remaining=29, limit=30, reset_at=NOW + 40),
        Ceiling("requests", "day", remaining=14399, limit=14400, reset_at=NOW + 33011.5),
        Ceiling("tokens", "minute", remaining=59000, limit=60000, reset_at=NOW + 11.5),
        Ceiling("tokens", "day", remaining=990000, limit=1000000, reset_at=None),
    )


def test_openrouter_headers_give_a_request_ceiling_with_an_epoch_millisecond_reset() -> None:
    headers = {
        "x-ratelimit-limit": "20",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "1741305600000",
    }
    assert parse_ratelimit_headers(headers, now=NOW) == (
        Ceiling("requests", "unknown", remaining=0, limit=20, reset_at=1741305600.0),
    )


def test_formats_present_together_come_in_a_fixed_order() -> None:
    headers = {**CEREBRAS, "x-ratelimit-remaining": "5", **GROQ}
    assert [
        (c.dimension, c.window, c.remaining) for c in parse_ratelimit_headers(headers, now=NOW)
    ] == [
        ("requests", "day", 14370),
        ("tokens", "minute", 17997),
        ("requests", "day", 14399),
        ("tokens", "minute", 59000),
        ("requests", "unknown", 5),
    ]


def test_a_garbage_remaining_drops_the_ceiling() -> None:
    headers = {**GROQ, "x-ratelimit-remaining-requests": "lots"}
    assert parse_ratelimit_headers(headers, now=NOW) == (
        Ceiling("tokens", "minute", remaining=17997, limit=18000, reset_at=NOW + 7.25),
    )


def test_a_limit_without_remaining_is_no_ceiling() -> None:
    headers = {"x-ratelimit-limit": "20", "x-ratelimit-limit-tokens-minute": "60000"}
    assert parse_ratelimit_headers(headers, now=NOW) == ()


def test_a_garbage_limit_becomes_none() -> None:
    headers = {"x-ratelimit-limit": "twenty", "x-ratelimit-remaining": "3"}
    assert parse_ratelimit_headers(headers, now=NOW) == (
        Ceiling("requests", "unknown", remaining=3, limit=None, reset_at=None),
    )


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [("-4", 0), ("59874.7", 59874), (" 12 ", 12), ("0", 0)],
)
def test_remaining_is_rounded_down_and_clamped_at_zero(remaining: str, expected: int) -> None:
    headers = {"x-ratelimit-remaining": remaining}
    assert parse_ratelimit_headers(headers, now=NOW) == (
        Ceiling("requests", "unknown", remaining=expected, limit=None, reset_at=None),
    )


@pytest.mark.parametrize("reset", ["-1", "soon", "1e12", "inf", ""])
def test_an_unparseable_openrouter_reset_becomes_none(reset: str) -> None:
    headers = {"x-ratelimit-remaining": "3", "x-ratelimit-reset": reset}
    assert parse_ratelimit_headers(headers, now=NOW) == (
        Ceiling("requests", "unknown", remaining=3, limit=None, reset_at=None),
    )


def test_a_negative_cerebras_reset_becomes_none() -> None:
    headers = {**CEREBRAS, "x-ratelimit-reset-tokens-minute": "-3"}
    assert parse_ratelimit_headers(headers, now=NOW)[1].reset_at is None


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "application/json"}, {"retry-after": "5"}],
)
def test_no_ratelimit_headers_give_no_ceilings(headers: dict[str, str]) -> None:
    assert parse_ratelimit_headers(headers, now=NOW) == ()


RATELIMIT_NAMES = st.sampled_from(
    [
        *GROQ,
        *CEREBRAS,
        "x-ratelimit-limit-requests-minute",
        "x-ratelimit-remaining-requests-minute",
        "x-ratelimit-reset-requests-minute",
        "x-ratelimit-limit-tokens-day",
        "x-ratelimit-remaining-tokens-day",
        "x-ratelimit-reset-tokens-day",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ]
)
NUMBERISH = st.from_regex(r"\A-?[0-9]{0,20}(\.[0-9]{0,5})?(h|m|s|ms)?\Z")


@given(
    headers=st.dictionaries(RATELIMIT_NAMES | st.text(), NUMBERISH | st.text()),
    now=st.floats(0, 4e9),
)
def test_parse_ratelimit_headers_never_raises(headers: dict[str, str], now: float) -> None:
    for ceiling in parse_ratelimit_headers(headers, now=now):
        assert ceiling.remaining >= 0
        assert ceiling.limit is None or ceiling.limit >= 0
        assert ceiling.reset_at is None or ceiling.reset_at >= 0


def test_ceiling_refuses_a_negative_remaining() -> None:
    with pytest.raises(ValueError, match="remaining"):
        Ceiling("requests", "day", remaining=-1, limit=None, reset_at=None)


# --- parse_gemini_error -----------------------------------------------------------------------

PER_DAY_ID = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
PER_MINUTE_ID = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
GEMINI_MESSAGE = "You exceeded your current quota. Please retry in 53.2s."


def gemini_body(*quota_ids: str, retry_delay: str | None = "53s") -> dict[str, object]:
    """The 429 body of providers.md, with the given violations and RetryInfo."""
    details: list[object] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                    "quotaId": quota_id,
                    "quotaValue": "20",
                }
                for quota_id in quota_ids
            ],
        }
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    return {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": GEMINI_MESSAGE,
            "details": details,
        }
    }


def test_gemini_per_day_quota_id_means_per_day() -> None:
    assert parse_gemini_error(json.dumps(gemini_body(PER_DAY_ID))) == QuotaSignal(
        per_day=True, retry_after=53.2, quota_id=PER_DAY_ID, message=GEMINI_MESSAGE
    )


def test_gemini_per_minute_quota_id_means_retry_after_the_delay() -> None:
    assert parse_gemini_error(json.dumps(gemini_body(PER_MINUTE_ID))) == QuotaSignal(
        per_day=False, retry_after=53.2, quota_id=PER_MINUTE_ID, message=GEMINI_MESSAGE
    )


def test_gemini_a_per_day_violation_wins_over_a_per_minute_one() -> None:
    body = json.dumps(gemini_body(PER_MINUTE_ID, PER_DAY_ID))
    assert parse_gemini_error(body) == QuotaSignal(
        per_day=True, retry_after=53.2, quota_id=PER_DAY_ID, message=GEMINI_MESSAGE
    )


def test_gemini_token_per_day_quota_id_is_per_day() -> None:
    quota_id = "GenerateContentInputTokensPerModelPerDay-FreeTier"
    signal = parse_gemini_error(json.dumps(gemini_body(quota_id)))
    assert signal is not None
    assert (signal.per_day, signal.quota_id) == (True, quota_id)


def test_gemini_fractional_retry_delay() -> None:
    body = gemini_body(PER_MINUTE_ID, retry_delay="0.5s")
    body["error"]["message"] = "You exceeded your current quota."  # type: ignore[index]
    signal = parse_gemini_error(json.dumps(body))
    assert signal is not None
    assert signal.retry_after == 0.5


def test_gemini_waits_for_the_later_of_retry_info_and_the_message() -> None:
    """RetryInfo rounds the message's delay down to whole seconds: retrying then is early."""
    signal = parse_gemini_error(json.dumps(gemini_body(PER_MINUTE_ID, retry_delay="53s")))
    assert signal is not None
    assert signal.retry_after == 53.2
    later = gemini_body(PER_MINUTE_ID, retry_delay="60s")
    signal = parse_gemini_error(json.dumps(later))
    assert signal is not None
    assert signal.retry_after == 60.0


def test_gemini_falls_back_to_the_delay_in_the_message() -> None:
    signal = parse_gemini_error(json.dumps(gemini_body(PER_MINUTE_ID, retry_delay=None)))
    assert signal is not None
    assert signal.retry_after == 53.2


def test_gemini_falls_back_to_the_message_when_retry_delay_is_garbage() -> None:
    signal = parse_gemini_error(json.dumps(gemini_body(PER_MINUTE_ID, retry_delay="soon")))
    assert signal is not None
    assert signal.retry_after == 53.2


def test_gemini_body_as_bytes_reads_like_text() -> None:
    body = json.dumps(gemini_body(PER_DAY_ID))
    assert parse_gemini_error(body.encode()) == parse_gemini_error(body)
    assert parse_gemini_error(body.encode()) is not None


def test_gemini_error_wrapped_in_a_list_is_read() -> None:
    body = json.dumps([gemini_body(PER_DAY_ID)])
    assert parse_gemini_error(body) == QuotaSignal(
        per_day=True, retry_after=53.2, quota_id=PER_DAY_ID, message=GEMINI_MESSAGE
    )


def test_gemini_resource_exhausted_without_details() -> None:
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded"}}
    assert parse_gemini_error(json.dumps(body)) == QuotaSignal(
        per_day=False, retry_after=None, quota_id=None, message="Quota exceeded"
    )


def test_gemini_code_429_alone_is_recognised() -> None:
    body = {"error": {"code": 429, "message": "Please retry in 2s"}}
    assert parse_gemini_error(json.dumps(body)) == QuotaSignal(
        per_day=False, retry_after=2.0, quota_id=None, message="Please retry in 2s"
    )


def test_gemini_ignores_details_of_the_wrong_types() -> None:
    body = {
        "error": {
            "status": "RESOURCE_EXHAUSTED",
            "message": 7,
            "details": [
                "junk",
                {"@type": 5},
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": "x"},
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": 3}, "y", {"quotaId": PER_MINUTE_ID}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": 53},
            ],
        }
    }
    assert parse_gemini_error(json.dumps(body)) == QuotaSignal(
        per_day=False, retry_after=None, quota_id=PER_MINUTE_ID, message=""
    )


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\x00",
        "",
        "not json",
        "null",
        "[]",
        "[1, 2]",
        '{"error": "RESOURCE_EXHAUSTED"}',
        '{"status": "RESOURCE_EXHAUSTED"}',
        '{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad"}}',
        "[" * 100_000,
    ],
)
def test_gemini_returns_none_for_other_bodies(body: bytes | str) -> None:
    assert parse_gemini_error(body) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
GEMINI_TYPES = st.sampled_from(
    [
        "type.googleapis.com/google.rpc.QuotaFailure",
        "type.googleapis.com/google.rpc.RetryInfo",
    ]
)
GEMINI_LIKE = st.fixed_dictionaries(
    {
        "error": st.fixed_dictionaries(
            {},
            optional={
                "code": st.just(429) | JSON,
                "status": st.just("RESOURCE_EXHAUSTED") | JSON,
                "message": st.text() | JSON,
                "details": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "@type": GEMINI_TYPES | JSON,
                            "violations": st.lists(
                                st.fixed_dictionaries({}, optional={"quotaId": st.text() | JSON})
                            )
                            | JSON,
                            "retryDelay": st.text() | JSON,
                        },
                    )
                    | JSON
                )
                | JSON,
            },
        )
        | JSON
    }
)


@given(st.text() | st.binary())
def test_parse_gemini_error_never_raises_on_text_or_bytes(body: bytes | str) -> None:
    result = parse_gemini_error(body)
    assert result is None or isinstance(result, QuotaSignal)


@given(GEMINI_LIKE | JSON)
def test_parse_gemini_error_never_raises_on_json_of_any_shape(value: object) -> None:
    result = parse_gemini_error(json.dumps(value))
    assert result is None or isinstance(result, QuotaSignal)
    assert result is None or result.retry_after is None or result.retry_after >= 0


# --- parse_zhipu_code -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"error": {"code": "1302", "message": "rate limit"}}', 1302),
        ('{"error": {"code": 1305, "message": "overloaded"}}', 1305),
        (b'{"error": {"code": "1302"}}', 1302),
        ('{"error": {"code": " 1261 "}}', 1261),
    ],
)
def test_zhipu_business_code_is_read(body: bytes | str, code: int) -> None:
    assert parse_zhipu_code(body) == code


@pytest.mark.parametrize(
    "body",
    [
        '{"error": {"code": true}}',
        '{"error": {"code": -1}}',
        '{"error": {"code": 1302.0}}',
        '{"error": {"code": "13o2"}}',
        '{"error": {"code": ""}}',
        '{"error": {"message": "no code"}}',
        '{"code": 1302}',
        '{"error": "1302"}',
        "1302",
        "not json",
        b"\xc3\x28",
    ],
)
def test_zhipu_returns_none_without_a_code(body: bytes | str) -> None:
    assert parse_zhipu_code(body) is None


@given(
    st.text()
    | st.binary()
    | JSON.map(json.dumps)
    | st.fixed_dictionaries({"error": st.fixed_dictionaries({"code": JSON})}).map(json.dumps)
)
def test_parse_zhipu_code_never_raises(body: bytes | str) -> None:
    result = parse_zhipu_code(body)
    assert result is None or result >= 0
