"""Outcomes: the policy table, what ``record`` does for every row, and ``classify``/``redact``."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freellm.core import health as health_
from freellm.core import ledger as ledger_
from freellm.core.catalog import ROLLING, Caps, ModelSpec
from freellm.core.health import Event, State
from freellm.core.ledger import Ledger, Refusal, Scope, Slot, Ticket
from freellm.core.outcome import (
    RULES,
    Blame,
    Charge,
    CooldownRule,
    Failover,
    Kind,
    Outcome,
    Rule,
    TransportError,
    classify,
    record,
    redact,
)
from freellm.core.signals import Ceiling
from freellm.shell.config import bundled_catalog

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
ESTIMATE = 500
REPORTED = 120
PROVIDER, KEY, MODEL = "groq", "key-1", "llama-3.3-70b-versatile"


def make_slot(*, account: bool = False, daily_reset: str = ROLLING, model: str = MODEL) -> Slot:
    spec = ModelSpec(id=model, caps=Caps(rpm=30, rpd=1000, tpm=100_000), account=account)
    return Slot(PROVIDER, KEY, spec, daily_reset)


def reserved(
    slot: Slot, *, ledger: Ledger | None = None, now: float = NOW, tokens: int = ESTIMATE
) -> tuple[Ledger, Ticket]:
    result = ledger_.reserve(Ledger() if ledger is None else ledger, slot, tokens, now=now)
    assert not isinstance(result, Refusal), result
    return result


def health_in(state: State) -> health_.Health:
    entry = health_.KeyHealth(state=state, since=NOW - 100, checked_at=NOW - 200)
    return health_.Health(health_.Health().keys.set((PROVIDER, KEY), entry))


def cooldowns(ledger: Ledger) -> dict[Scope, tuple[float, int]]:
    return {scope: (c.until, c.strikes) for scope, c in ledger.cooldowns.items()}


# --- the policy, written from the text, not from RULES -----------------------------------------
#
# 429 per minute: next candidate, cool down for Retry-After/RetryInfo or until the window frees.
# 429 per day: next candidate, cool down until the daily reset.
# 401/403: the key is invalid and leaves routing.         402: the key cools down 24 h.
# 404: that provider's model is out for 24 h.
# 408/5xx/timeout/connection error: short exponential cooldown on (provider, model, key), and the
#   provider is skipped for the rest of the request.
# 400/413 "context length": try a model with a larger context.  Other 400: back to the client.
# Charges (outcome.py's docstring): a success, a timeout, a broken stream and a cancelled call
# charge what they are known to have used (reported usage, or what was streamed), else the whole
# estimate; a refused request, or one that never reached the provider, counts as a request
# without tokens.

POLICY: dict[Kind, Rule] = {
    Kind.SUCCESS: Rule(Failover.DONE, Charge.USAGE, CooldownRule.CLEAR, Event.CALL_OK, Blame.NONE),
    Kind.RATE_LIMITED: Rule(
        Failover.NEXT,
        Charge.REQUEST_ONLY,
        CooldownRule.RETRY_AFTER,
        Event.CALL_RATE_LIMITED,
        Blame.CAPACITY,
    ),
    Kind.QUOTA_EXHAUSTED: Rule(
        Failover.NEXT,
        Charge.REQUEST_ONLY,
        CooldownRule.DAILY_RESET,
        Event.CALL_RATE_LIMITED,
        Blame.CAPACITY,
    ),
    Kind.INVALID_KEY: Rule(
        Failover.NEXT, Charge.REQUEST_ONLY, CooldownRule.NONE, Event.CALL_INVALID, Blame.UPSTREAM
    ),
    Kind.PAYMENT_REQUIRED: Rule(
        Failover.NEXT, Charge.REQUEST_ONLY, CooldownRule.KEY_DAY, Event.CALL_ERROR, Blame.UPSTREAM
    ),
    # A provider without the model: not on this key, nor on any other of that provider.
    Kind.UNKNOWN_MODEL: Rule(
        Failover.NEXT_MODEL, Charge.REQUEST_ONLY, CooldownRule.MODEL_DAY, None, Blame.UPSTREAM
    ),
    # Too long for every model tried: the client's request is what must change.
    Kind.CONTEXT_TOO_LONG: Rule(
        Failover.LARGER_CONTEXT, Charge.REQUEST_ONLY, CooldownRule.NONE, None, Blame.CLIENT
    ),
    Kind.BAD_REQUEST: Rule(
        Failover.CLIENT, Charge.REQUEST_ONLY, CooldownRule.NONE, None, Blame.CLIENT
    ),
    Kind.UPSTREAM_ERROR: Rule(
        Failover.NEXT_PROVIDER,
        Charge.REQUEST_ONLY,
        CooldownRule.BACKOFF,
        Event.CALL_ERROR,
        Blame.UPSTREAM,
    ),
    Kind.BROKEN_RESPONSE: Rule(
        Failover.NEXT_PROVIDER, Charge.USAGE, CooldownRule.BACKOFF, Event.CALL_ERROR, Blame.UPSTREAM
    ),
    Kind.TIMEOUT: Rule(
        Failover.NEXT_PROVIDER, Charge.USAGE, CooldownRule.BACKOFF, Event.CALL_ERROR, Blame.UPSTREAM
    ),
    Kind.CONNECTION_ERROR: Rule(
        Failover.NEXT_PROVIDER,
        Charge.REQUEST_ONLY,
        CooldownRule.BACKOFF,
        Event.CALL_ERROR,
        Blame.UPSTREAM,
    ),
    # A client that goes away ends the request; the key did nothing wrong.
    Kind.CANCELLED: Rule(Failover.DONE, Charge.USAGE, CooldownRule.NONE, None, Blame.NONE),
}


def test_rules_cover_every_kind() -> None:
    assert set(RULES) == set(Kind)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_rules_row_follows_the_written_policy(kind: Kind) -> None:
    assert RULES[kind] == POLICY[kind]


def test_outcome_rule_is_its_kinds_row() -> None:
    for kind in Kind:
        assert Outcome(kind).rule is RULES[kind]


# --- walking every row of RULES through record() -----------------------------------------------

OUTCOMES: dict[Kind, Outcome] = {
    Kind.SUCCESS: Outcome(Kind.SUCCESS, 200),
    Kind.RATE_LIMITED: Outcome(Kind.RATE_LIMITED, 429, "slow down"),
    Kind.QUOTA_EXHAUSTED: Outcome(Kind.QUOTA_EXHAUSTED, 429, "per day"),
    Kind.INVALID_KEY: Outcome(Kind.INVALID_KEY, 401, "Invalid API Key"),
    Kind.PAYMENT_REQUIRED: Outcome(Kind.PAYMENT_REQUIRED, 402, "no credits"),
    Kind.UNKNOWN_MODEL: Outcome(Kind.UNKNOWN_MODEL, 404, "no such model"),
    Kind.CONTEXT_TOO_LONG: Outcome(Kind.CONTEXT_TOO_LONG, 400, "maximum context length"),
    Kind.BAD_REQUEST: Outcome(Kind.BAD_REQUEST, 400, "bad"),
    Kind.UPSTREAM_ERROR: Outcome(Kind.UPSTREAM_ERROR, 503, "overloaded"),
    Kind.BROKEN_RESPONSE: Outcome(Kind.BROKEN_RESPONSE, 200, "stream cut"),
    Kind.TIMEOUT: Outcome(Kind.TIMEOUT, None, "timed out"),
    Kind.CONNECTION_ERROR: Outcome(Kind.CONNECTION_ERROR, None, "refused"),
    Kind.CANCELLED: Outcome(Kind.CANCELLED, None, "client went away"),
}

CHARGED = {Charge.USAGE: REPORTED, Charge.REQUEST_ONLY: 0}


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_record_charges_what_the_row_says(kind: Kind) -> None:
    slot = make_slot()
    ledger, ticket = reserved(slot)
    ledger, _ = record(ledger, health_.Health(), ticket, OUTCOMES[kind], tokens=REPORTED, now=NOW)
    usage = ledger.usage[slot.usage_key]
    expected = (1, CHARGED[RULES[kind].charge])  # the request itself always stays counted
    assert usage.minute.totals(NOW) == expected
    assert usage.day.totals(NOW) == expected
    assert usage.inflight == 0


def test_a_success_without_reported_usage_keeps_the_estimate() -> None:
    slot = make_slot()
    ledger, ticket = reserved(slot)
    ledger, _ = record(
        ledger, health_.Health(), ticket, OUTCOMES[Kind.SUCCESS], tokens=None, now=NOW
    )
    assert ledger.usage[slot.usage_key].minute.totals(NOW) == (1, ESTIMATE)


def test_a_success_reporting_more_than_the_estimate_charges_it_all() -> None:
    slot = make_slot()
    ledger, ticket = reserved(slot)
    ledger, _ = record(
        ledger, health_.Health(), ticket, OUTCOMES[Kind.SUCCESS], tokens=2000, now=NOW
    )
    assert ledger.usage[slot.usage_key].day.totals(NOW) == (1, 2000)


def expected_cooldowns(kind: Kind, *, account: bool) -> dict[Scope, tuple[float, int]]:
    """The cooldowns one outcome (OUTCOMES[kind], rolling day) leaves on a fresh ledger."""
    slot_scope: Scope = (PROVIDER, KEY, MODEL)
    key_scope: Scope = (PROVIDER, KEY, None)
    limit_scope = key_scope if account else slot_scope
    rule = RULES[kind].cooldown
    if rule is CooldownRule.RETRY_AFTER:
        return {limit_scope: (NOW + 60, 0)}  # no Retry-After: one whole minute
    if rule is CooldownRule.DAILY_RESET:
        return {limit_scope: (NOW + 3600, 0)}  # rolling day without a reset time: an hour
    if rule is CooldownRule.KEY_DAY:
        return {key_scope: (NOW + 86_400, 0)}
    if rule is CooldownRule.MODEL_DAY:
        return {(PROVIDER, None, MODEL): (NOW + 86_400, 0)}
    if rule is CooldownRule.BACKOFF:
        return {slot_scope: (NOW + 1, 1)}  # first strike: one second, on the slot alone
    return {}  # NONE, and CLEAR on a ledger with nothing to clear


@pytest.mark.parametrize("account", [False, True], ids=["per-model", "account-wide"])
@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_record_sets_the_cooldown_the_row_says(kind: Kind, account: bool) -> None:
    ledger, ticket = reserved(make_slot(account=account))
    ledger, _ = record(ledger, health_.Health(), ticket, OUTCOMES[kind], tokens=REPORTED, now=NOW)
    assert cooldowns(ledger) == expected_cooldowns(kind, account=account)


@pytest.mark.parametrize("start", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_record_moves_key_health_as_the_transitions_table_says(kind: Kind, start: State) -> None:
    ledger, ticket = reserved(make_slot())
    _, health = record(ledger, health_in(start), ticket, OUTCOMES[kind], tokens=None, now=NOW)
    event = RULES[kind].health
    expected = start if event is None else health_.TRANSITIONS[start, event]
    assert health.of(PROVIDER, KEY).state is expected


def test_record_notes_a_failure_in_key_health_and_a_success_clears_it() -> None:
    slot = make_slot()
    ledger, ticket = reserved(slot)
    ledger, health = record(
        ledger, health_.Health(), ticket, OUTCOMES[Kind.INVALID_KEY], tokens=None, now=NOW
    )
    assert health.of(PROVIDER, KEY).last_error == "401 invalid_key: Invalid API Key"
    ledger, ticket = reserved(slot, ledger=ledger)
    _, health = record(ledger, health, ticket, OUTCOMES[Kind.SUCCESS], tokens=None, now=NOW)
    assert health.of(PROVIDER, KEY).last_error is None


def test_an_invalid_key_leaves_routing() -> None:
    ledger, ticket = reserved(make_slot())
    _, health = record(
        ledger, health_.Health(), ticket, OUTCOMES[Kind.INVALID_KEY], tokens=None, now=NOW
    )
    assert not health_.is_routable(health, PROVIDER, KEY)


# --- the cooldown rules in detail ---------------------------------------------------------------


@pytest.mark.parametrize("account", [False, True], ids=["per-model", "account-wide"])
def test_rate_limit_cools_down_for_the_retry_after_on_the_right_scope(account: bool) -> None:
    ledger, ticket = reserved(make_slot(account=account))
    result = Outcome(Kind.RATE_LIMITED, 429, retry_after=12.5)
    ledger, _ = record(ledger, health_.Health(), ticket, result, tokens=None, now=NOW)
    scope: Scope = (PROVIDER, KEY, None) if account else (PROVIDER, KEY, MODEL)
    assert cooldowns(ledger) == {scope: (NOW + 12.5, 0)}


def test_an_account_wide_rate_limit_blocks_every_model_of_the_key() -> None:
    ledger, ticket = reserved(make_slot(account=True))
    result = Outcome(Kind.RATE_LIMITED, 429, retry_after=30.0)
    ledger, _ = record(ledger, health_.Health(), ticket, result, tokens=None, now=NOW)
    other = make_slot(account=True, model="another-model")
    verdict = ledger_.check(ledger, other, 10, NOW + 29)
    assert isinstance(verdict, Refusal)
    assert verdict.retry_at == NOW + 30


@pytest.mark.parametrize("account", [False, True], ids=["per-model", "account-wide"])
def test_quota_exhausted_uses_the_providers_reset_time_when_given(account: bool) -> None:
    slot = make_slot(account=account, daily_reset="America/Los_Angeles")
    ledger, ticket = reserved(slot)
    result = Outcome(Kind.QUOTA_EXHAUSTED, 429, retry_after=7200.0)
    ledger, _ = record(ledger, health_.Health(), ticket, result, tokens=None, now=NOW)
    scope: Scope = (PROVIDER, KEY, None) if account else (PROVIDER, KEY, MODEL)
    assert cooldowns(ledger) == {scope: (NOW + 7200, 0)}


def _utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("zone", "now", "midnight"),
    [
        # 12:00 UTC is 04:00 PST; the next midnight in Los Angeles is 08:00 UTC the next day.
        ("America/Los_Angeles", _utc(2026, 3, 1, 12), _utc(2026, 3, 2, 8)),
        # 06:00 UTC is still 22:00 PST the day before: its midnight comes two hours later.
        ("America/Los_Angeles", _utc(2026, 3, 1, 6), _utc(2026, 3, 1, 8)),
        # The day clocks spring forward (8 March 2026): the next midnight is PDT, 07:00 UTC.
        ("America/Los_Angeles", _utc(2026, 3, 8, 20), _utc(2026, 3, 9, 7)),
        ("UTC", _utc(2026, 3, 1, 12), _utc(2026, 3, 2, 0)),
        ("Asia/Kolkata", _utc(2026, 3, 1, 12), _utc(2026, 3, 1, 18, 30)),
    ],
)
def test_quota_exhausted_on_a_calendar_day_cools_down_until_the_zones_next_midnight(
    zone: str, now: float, midnight: float
) -> None:
    ledger, ticket = reserved(make_slot(daily_reset=zone), now=now)
    result = Outcome(Kind.QUOTA_EXHAUSTED, 429)
    ledger, _ = record(ledger, health_.Health(), ticket, result, tokens=None, now=now)
    assert cooldowns(ledger) == {(PROVIDER, KEY, MODEL): (midnight, 0)}


def test_quota_exhausted_on_a_rolling_day_looks_again_in_an_hour() -> None:
    ledger, ticket = reserved(make_slot(daily_reset=ROLLING))
    result = Outcome(Kind.QUOTA_EXHAUSTED, 429)
    ledger, _ = record(ledger, health_.Health(), ticket, result, tokens=None, now=NOW)
    assert cooldowns(ledger) == {(PROVIDER, KEY, MODEL): (NOW + 3600, 0)}


def test_payment_required_blocks_every_model_of_the_key_for_a_day() -> None:
    ledger, ticket = reserved(make_slot())
    ledger, _ = record(
        ledger, health_.Health(), ticket, OUTCOMES[Kind.PAYMENT_REQUIRED], tokens=None, now=NOW
    )
    verdict = ledger_.check(ledger, make_slot(model="another-model"), 10, NOW + 86_399)
    assert isinstance(verdict, Refusal)
    assert verdict.retry_at == NOW + 86_400
    assert not isinstance(ledger_.check(ledger, make_slot(), 10, NOW + 86_400), Refusal)


def test_unknown_model_takes_the_providers_model_out_on_every_key_for_a_day() -> None:
    ledger, ticket = reserved(make_slot())
    ledger, _ = record(
        ledger, health_.Health(), ticket, OUTCOMES[Kind.UNKNOWN_MODEL], tokens=None, now=NOW
    )
    cooldown = ledger_.cooldown_of(ledger, (PROVIDER, None, MODEL), NOW + 86_399)
    assert cooldown is not None
    assert cooldown.until == NOW + 86_400
    assert ledger_.cooldown_of(ledger, (PROVIDER, None, MODEL), NOW + 86_400) is None


@pytest.mark.parametrize(
    "kind",
    [Kind.UPSTREAM_ERROR, Kind.BROKEN_RESPONSE, Kind.TIMEOUT, Kind.CONNECTION_ERROR],
)
def test_failures_back_off_1_2_4_up_to_60_seconds_counting_strikes(kind: Kind) -> None:
    slot = make_slot()
    ledger, health, now = Ledger(), health_.Health(), NOW
    for strike, delay in enumerate([1, 2, 4, 8, 16, 32, 60, 60, 60], start=1):
        ledger, ticket = reserved(slot, ledger=ledger, now=now)
        ledger, health = record(ledger, health, ticket, OUTCOMES[kind], tokens=None, now=now)
        assert cooldowns(ledger) == {(PROVIDER, KEY, MODEL): (now + delay, strike)}
        now += delay  # try again as soon as the cooldown ends


def test_a_success_after_a_backoff_clears_it_and_the_next_failure_starts_over() -> None:
    slot = make_slot()
    ledger, health, now = Ledger(), health_.Health(), NOW
    for _ in range(3):
        ledger, ticket = reserved(slot, ledger=ledger, now=now)
        ledger, health = record(
            ledger, health, ticket, OUTCOMES[Kind.TIMEOUT], tokens=None, now=now
        )
        now += 10
    assert cooldowns(ledger)[PROVIDER, KEY, MODEL][1] == 3
    ledger, ticket = reserved(slot, ledger=ledger, now=now)
    ledger, health = record(ledger, health, ticket, OUTCOMES[Kind.SUCCESS], tokens=None, now=now)
    assert cooldowns(ledger) == {}
    ledger, ticket = reserved(slot, ledger=ledger, now=now)
    ledger, _ = record(ledger, health, ticket, OUTCOMES[Kind.TIMEOUT], tokens=None, now=now)
    assert cooldowns(ledger) == {(PROVIDER, KEY, MODEL): (now + 1, 1)}


# --- classify ----------------------------------------------------------------------------------


def gemini_429(quota_id: str, retry_delay: str = "53s") -> str:
    """The Gemini 429 body of providers.md."""
    return json.dumps(
        {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "You exceeded your current quota. Please retry in 53.2s.",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/"
                                "generate_content_free_tier_requests",
                                "quotaId": quota_id,
                                "quotaValue": "20",
                            }
                        ],
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": retry_delay,
                    },
                ],
            }
        }
    )


def groq_429(window: str) -> str:
    return json.dumps(
        {
            "error": {
                "message": "Rate limit reached for model `llama-3.3-70b-versatile` in organization "
                f"`org_01abc` service tier `on_demand` on {window}: Limit 1000, Used 1000, "
                "Requested 1. Please try again in 1m26.4s. Visit "
                "https://console.groq.com/docs/rate-limits for more information.",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        }
    )


COHERE_TRIAL = json.dumps(
    {
        "id": "5e1f0b8a-3c51-4f7e-9a0f-2d3c4b5a6f70",
        "message": "You are using a Trial key, which is limited to 1000 API calls / month. You can "
        "continue to use the Trial key for free or upgrade to a Production key with higher rate "
        "limits at 'https://dashboard.cohere.com/api-keys'.",
    }
)
COHERE_MINUTE = json.dumps(
    {"message": "You are using a Trial key, which is limited to 20 API calls / minute."}
)
ZHIPU_1302 = json.dumps({"error": {"code": "1302", "message": "您当前使用该API的并发数过高"}})
ZHIPU_1305 = json.dumps(
    {"error": {"code": "1305", "message": "当前API请求过多\uff0c请稍后重试\u3002"}}
)
OPENAI_CONTEXT = json.dumps(
    {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9013 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
)

GEMINI_BAD_KEY = json.dumps(
    {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            ],
        }
    }
)
CLASSIFY_CASES: list[
    tuple[str, int | None, dict[str, str], str, TransportError | None, Kind, float | None]
] = [
    # (case id, status, headers, body, transport error, kind, retry_after)
    ("200", 200, {}, '{"choices": []}', None, Kind.SUCCESS, None),
    (
        "gemini per-minute",
        429,
        {},
        gemini_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
        None,
        Kind.RATE_LIMITED,
        53.2,  # the message's delay: RetryInfo's 53 s is it rounded down
    ),
    (
        "gemini per-day ignores its delay",
        429,
        {"retry-after": "53"},
        gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
        None,
        Kind.QUOTA_EXHAUSTED,
        None,
    ),
    (
        "groq per-minute",
        429,
        {"retry-after": "2"},
        groq_429("tokens per minute (TPM)"),
        None,
        Kind.RATE_LIMITED,
        2.0,
    ),
    ("cohere trial month", 429, {}, COHERE_TRIAL, None, Kind.QUOTA_EXHAUSTED, None),
    ("cohere trial minute", 429, {}, COHERE_MINUTE, None, Kind.RATE_LIMITED, None),
    ("zhipu 1302", 429, {}, ZHIPU_1302, None, Kind.RATE_LIMITED, None),
    ("zhipu 1305", 429, {}, ZHIPU_1305, None, Kind.UPSTREAM_ERROR, None),
    (
        "plain 429",
        429,
        {"retry-after-ms": "1500"},
        "Too Many Requests",
        None,
        Kind.RATE_LIMITED,
        1.5,
    ),
    ("401", 401, {}, '{"error": {"message": "Invalid API Key"}}', None, Kind.INVALID_KEY, None),
    ("403", 403, {}, '{"error": {"message": "forbidden"}}', None, Kind.INVALID_KEY, None),
    ("gemini bad key", 400, {}, GEMINI_BAD_KEY, None, Kind.INVALID_KEY, None),
    (
        "402",
        402,
        {},
        '{"error": {"message": "Insufficient credits"}}',
        None,
        Kind.PAYMENT_REQUIRED,
        None,
    ),
    ("404", 404, {}, '{"error": {"message": "model not found"}}', None, Kind.UNKNOWN_MODEL, None),
    ("408", 408, {}, "Request Timeout", None, Kind.UPSTREAM_ERROR, None),
    ("413", 413, {}, "Payload Too Large", None, Kind.CONTEXT_TOO_LONG, None),
    ("400 context length", 400, {}, OPENAI_CONTEXT, None, Kind.CONTEXT_TOO_LONG, None),
    (
        "400 other",
        400,
        {},
        '{"error": {"message": "temperature must be <= 2"}}',
        None,
        Kind.BAD_REQUEST,
        None,
    ),
    ("422", 422, {}, '{"detail": "messages: field required"}', None, Kind.BAD_REQUEST, None),
    ("500", 500, {}, "Internal Server Error", None, Kind.UPSTREAM_ERROR, None),
    ("502", 502, {}, "<html>Bad Gateway</html>", None, Kind.UPSTREAM_ERROR, None),
    ("503", 503, {}, '{"error": {"message": "overloaded"}}', None, Kind.UPSTREAM_ERROR, None),
    ("timeout", None, {}, "", TransportError.TIMEOUT, Kind.TIMEOUT, None),
    ("connect", None, {}, "", TransportError.CONNECT, Kind.CONNECTION_ERROR, None),
    ("protocol", None, {}, "", TransportError.PROTOCOL, Kind.BROKEN_RESPONSE, None),
    ("stream cut after 200", 200, {}, "", TransportError.PROTOCOL, Kind.BROKEN_RESPONSE, None),
    ("no status, no error", None, {}, "", None, Kind.BROKEN_RESPONSE, None),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "kind", "retry_after"),
    [case[1:] for case in CLASSIFY_CASES],
    ids=[case[0] for case in CLASSIFY_CASES],
)
def test_classify_reads_real_provider_answers(
    status: int | None,
    headers: dict[str, str],
    body: str,
    error: TransportError | None,
    kind: Kind,
    retry_after: float | None,
) -> None:
    result = classify(status, headers, body.encode(), error=error, now=NOW)
    assert (result.kind, result.status, result.retry_after) == (kind, status, retry_after)


def test_classify_reads_groq_requests_per_day_429_as_quota_exhausted() -> None:
    result = classify(429, {"retry-after": "87"}, groq_429("requests per day (RPD)"), now=NOW)
    assert result.kind is Kind.QUOTA_EXHAUSTED


def test_classify_reads_a_per_day_429_in_plain_text_as_quota_exhausted() -> None:
    body = "Rate limit reached for model on requests per day (RPD): Limit 1000, Used 1000"
    assert classify(429, {}, body, now=NOW).kind is Kind.QUOTA_EXHAUSTED


def test_classify_success_carries_the_ceilings_of_groq_headers() -> None:
    headers = {
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "999",
        "x-ratelimit-reset-requests": "1m26.4s",
        "x-ratelimit-limit-tokens": "12000",
        "x-ratelimit-remaining-tokens": "11500",
        "x-ratelimit-reset-tokens": "2.5s",
    }
    result = classify(200, headers, b"{}", now=NOW)
    assert result.kind is Kind.SUCCESS
    assert result.ceilings == (
        Ceiling("requests", "day", remaining=999, limit=1000, reset_at=NOW + 86.4),
        Ceiling("tokens", "minute", remaining=11500, limit=12000, reset_at=NOW + 2.5),
    )


def test_classify_429_keeps_the_ceilings_of_its_headers() -> None:
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    result = classify(429, {"retry-after": "30", **headers}, groq_429("x"), now=NOW)
    assert result.ceilings == (
        Ceiling("requests", "day", remaining=0, limit=None, reset_at=NOW + 30),
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"error": {"message": "model is busy"}}', "model is busy"),
        ('{"error": {"msg": "model is busy"}}', "model is busy"),
        ('{"error": "model is busy"}', "model is busy"),
        ('{"message": "model is busy"}', "model is busy"),
        ('{"detail": "model is busy"}', "model is busy"),
        ('[{"error": {"code": 400, "message": "model is busy"}}]', "model is busy"),
        ("  model is busy\n", "model is busy"),
        ('{"unexpected": 1}', '{"unexpected": 1}'),
        (b"\xffmodel is busy", "\ufffdmodel is busy"),
    ],
)
def test_classify_extracts_the_error_message(body: str | bytes, message: str) -> None:
    assert classify(400, {}, body, now=NOW).message == message


def test_classify_keeps_at_most_500_characters_of_a_message() -> None:
    assert classify(500, {}, "x" * 10_000, now=NOW).message == "x" * 500


def test_classify_redacts_a_key_quoted_in_the_error_message() -> None:
    body = '{"error": {"message": "Incorrect API key provided: gsk_abcdefghijklmnop1234XYZ"}}'
    result = classify(401, {}, body, now=NOW)
    assert "gsk_abcdefghijklmnop1234XYZ" not in result.message
    assert result.message.startswith("Incorrect API key provided: ")


def test_classify_never_raises_on_deeply_nested_json() -> None:
    assert classify(400, {}, "[" * 100_000, now=NOW).kind is Kind.BAD_REQUEST


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ERRORISH = st.builds(
    lambda code, message, details: {
        "error": {"code": code, "message": message, "details": details}
    },
    st.sampled_from([429, "1302", "1305", 400, "RESOURCE_EXHAUSTED"]) | JSON,
    st.text(max_size=40) | JSON,
    JSON,
)
BODIES = st.binary(max_size=200) | st.text(max_size=200) | (JSON | ERRORISH).map(json.dumps)


@settings(max_examples=300)
@given(
    status=st.none() | st.integers() | st.sampled_from([200, 400, 401, 404, 413, 429, 500, 503]),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "retry-after",
                "retry-after-ms",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-remaining-tokens-minute",
                "x-ratelimit-reset",
            ]
        )
        | st.text(max_size=10),
        st.text(max_size=20),
        max_size=5,
    ),
    body=BODIES,
    error=st.none() | st.sampled_from(TransportError),
    now=st.floats(0, 4e9),
)
def test_classify_never_raises(
    status: int | None,
    headers: dict[str, str],
    body: bytes | str,
    error: TransportError | None,
    now: float,
) -> None:
    assert isinstance(classify(status, headers, body, error=error, now=now), Outcome)


# --- redact ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "sk-abcdefghijklmnop1234",
        "gsk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdEFGH",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv",
        "hf_abcdefghijklmnopqrstu",
        "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0",  # a 40-character token of no known shape
    ],
)
def test_redact_removes_key_shaped_text(secret: str) -> None:
    text = f'Incorrect API key provided: "{secret}". You can find your API key at the dashboard.'
    redacted = redact(text)
    assert secret not in redacted
    assert redacted == text.replace(secret, "[redacted]")


@pytest.mark.parametrize(
    "text",
    [
        "The model llama-3.3-70b-versatile does not exist or you do not have access to it.",
        "Rate limit reached on tokens per minute (TPM): Limit 12000, Used 11800, Requested 500.",
        "internationalization-considerations are out of scope",
        "request_id 12345 failed",
        "skip_special_tokens must be a bool",
        "model meta-llama/llama-4-maverick-17b-128e-instruct is busy",
    ],
)
def test_redact_keeps_ordinary_text(text: str) -> None:
    assert redact(text) == text


def test_redact_keeps_every_bundled_model_id() -> None:
    catalog = bundled_catalog()
    ids = [model for spec in catalog.providers.values() for model in spec.models]
    assert ids
    for model_id in ids:
        assert redact(f"model {model_id} is busy") == f"model {model_id} is busy"


def test_a_success_keeps_a_rate_limit_cooldown_that_a_concurrent_call_started() -> None:
    slot = make_slot()
    ledger, first = reserved(slot)
    ledger, second = reserved(slot, ledger=ledger)
    limited = Outcome(Kind.RATE_LIMITED, 429, retry_after=30.0)
    ledger, health = record(ledger, health_.Health(), first, limited, tokens=None, now=NOW + 1)
    ledger, _ = record(ledger, health, second, OUTCOMES[Kind.SUCCESS], tokens=5, now=NOW + 2)
    assert cooldowns(ledger) == {(PROVIDER, KEY, MODEL): (NOW + 31, 0)}


def test_a_5xx_retry_after_lengthens_the_backoff_but_never_shortens_it() -> None:
    slot = make_slot()
    ledger, ticket = reserved(slot)
    slow = Outcome(Kind.UPSTREAM_ERROR, 503, retry_after=20.0)
    ledger, health = record(ledger, health_.Health(), ticket, slow, tokens=None, now=NOW)
    assert cooldowns(ledger) == {(PROVIDER, KEY, MODEL): (NOW + 20, 1)}
    ledger, ticket = reserved(slot, ledger=ledger, now=NOW + 20)
    soon = Outcome(Kind.UPSTREAM_ERROR, 503, retry_after=0.5)
    ledger, _ = record(ledger, health, ticket, soon, tokens=None, now=NOW + 20)
    assert cooldowns(ledger) == {(PROVIDER, KEY, MODEL): (NOW + 22, 2)}


@pytest.mark.parametrize("kind", [Kind.TIMEOUT, Kind.BROKEN_RESPONSE, Kind.CANCELLED])
def test_a_failure_with_nothing_seen_keeps_the_whole_estimate(kind: Kind) -> None:
    slot = make_slot()
    ledger, ticket = reserved(slot)
    ledger, _ = record(ledger, health_.Health(), ticket, OUTCOMES[kind], tokens=None, now=NOW)
    assert ledger.usage[slot.usage_key].minute.totals(NOW) == (1, ESTIMATE)


# --- Cohere's 429s say in words which window ran out -------------------------------------------

COHERE_TRIAL = (
    "You are using a Trial key, which is limited to 1000 API calls / month. You can continue to "
    "use the Trial key for free or upgrade to a Production key with higher rate limits."
)
COHERE_MINUTE = "You are using a Trial key, which is limited to 20 API calls / minute."


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (COHERE_TRIAL, Kind.QUOTA_EXHAUSTED),
        (COHERE_MINUTE, Kind.RATE_LIMITED),
        ("limited to 100 calls per day", Kind.QUOTA_EXHAUSTED),
        ("Daily limit reached", Kind.QUOTA_EXHAUSTED),
        ("limited to 1000 API calls /month", Kind.QUOTA_EXHAUSTED),
        ("too many requests", Kind.RATE_LIMITED),
        ("limited to 10 calls per minute", Kind.RATE_LIMITED),
    ],
)
def test_a_cohere_429_is_per_day_when_its_words_say_so(message: str, kind: Kind) -> None:
    result = classify(429, {}, json.dumps({"message": message}).encode(), now=0.0)
    assert (result.kind, result.message) == (kind, message)
