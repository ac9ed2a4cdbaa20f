"""Outcomes: what a provider's answer means, and what each meaning does.

:func:`classify` turns what came back from one upstream call (status, headers, body, or a transport
error) into an :class:`Outcome`. :data:`RULES` is the table of what each kind of outcome does:
whether the request fails over and how far, what it charges to the ledger, which cooldown it
starts, and what it tells key health. :func:`record` applies a row to the ledger and health.

================  ==============  =======  ======================  =================  ========
kind              failover        charge   cooldown                health             blame
================  ==============  =======  ======================  =================  ========
success           done            usage    clear backoff           call_ok            -
rate_limited      next            request  Retry-After, else 60 s  call_rate_limited  capacity
quota_exhausted   next            request  until the daily reset   call_rate_limited  capacity
invalid_key       next            request  (key leaves routing)    call_invalid       upstream
payment_required  next            request  key, 24 h               call_error         upstream
unknown_model     next model      request  provider's model, 24 h  -                  upstream
context_too_long  larger context  request  -                       -                  client
bad_request       back to client  request  -                       -                  client
upstream_error    next provider   request  slot, backoff           call_error         upstream
broken_response   next provider   usage    slot, backoff           call_error         upstream
timeout           next provider   usage    slot, backoff           call_error         upstream
connection_error  next provider   request  slot, backoff           call_error         upstream
cancelled         done            usage    -                       -                  -
================  ==============  =======  ======================  =================  ========

"Charge" is what the ledger keeps of the reservation. *usage*: what the call is known to have
used, the usage the provider reported or, for a stream that broke, what was streamed; with neither
(a call that timed out or was cancelled before any answer), the whole estimate, since the provider
may have generated tokens we never saw. *request*: the provider refused the request before
generating, or it never got there; the request stays counted (an upstream 429 still counts against
RPM) but no tokens. A 5xx's Retry-After lengthens its backoff, never shortens it. Rate-limit
cooldowns of an account-wide model apply to the whole key, since its caps are the key's.
"Backoff" is exponential, 1 s doubling up to 60 s. "Blame" decides the client's answer when no
candidate served the request: any upstream failure makes it a 502, else a spent free tier a 429
(with when the first candidate frees up), else a request too long everywhere a 400.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from freellm.core import health as health_
from freellm.core import ledger as ledger_
from freellm.core.catalog import ROLLING
from freellm.core.signals import (
    Ceiling,
    parse_gemini_error,
    parse_ratelimit_headers,
    parse_retry_after,
    parse_zhipu_code,
)
from freellm.core.windows import local_day_bounds

__all__ = [
    "RULES",
    "Blame",
    "Charge",
    "CooldownRule",
    "Failover",
    "Kind",
    "Outcome",
    "Rule",
    "TransportError",
    "classify",
    "record",
    "redact",
]


class Kind(enum.Enum):
    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    INVALID_KEY = "invalid_key"
    PAYMENT_REQUIRED = "payment_required"
    UNKNOWN_MODEL = "unknown_model"
    CONTEXT_TOO_LONG = "context_too_long"
    BAD_REQUEST = "bad_request"
    UPSTREAM_ERROR = "upstream_error"
    BROKEN_RESPONSE = "broken_response"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    CANCELLED = "cancelled"  # the client went away; the call was cancelled


class TransportError(enum.Enum):
    """What went wrong below HTTP; the shell maps httpx's exceptions to these in one place."""

    TIMEOUT = "timeout"
    CONNECT = "connect"  # never reached the provider
    PROTOCOL = "protocol"  # a broken or malformed response, a stream cut mid-way


class Failover(enum.Enum):
    """How far the rest of a request's plan moves away from a failed candidate."""

    DONE = "done"  # the request is over
    NEXT = "next"  # the next candidate, even another key of the same model
    NEXT_MODEL = "next_model"  # not this provider's model again, on any key
    NEXT_PROVIDER = "next_provider"  # not this provider again
    LARGER_CONTEXT = "larger_context"  # only models with a larger context window
    CLIENT = "client"  # the answer goes back to the client as it is


class Blame(enum.Enum):
    """What a failed attempt says when no candidate served the request: the client's status."""

    NONE = "none"  # not a failure
    CAPACITY = "capacity"  # the free tier is spent for now: 429, with when it frees up
    UPSTREAM = "upstream"  # the provider failed: 502
    CLIENT = "client"  # the request itself (too long everywhere): 400


class Charge(enum.Enum):
    USAGE = "usage"
    REQUEST_ONLY = "request_only"


class CooldownRule(enum.Enum):
    NONE = "none"
    CLEAR = "clear"
    RETRY_AFTER = "retry_after"
    DAILY_RESET = "daily_reset"
    KEY_DAY = "key_day"
    MODEL_DAY = "model_day"
    BACKOFF = "backoff"


@attrs.frozen
class Rule:
    failover: Failover
    charge: Charge
    cooldown: CooldownRule
    health: health_.Event | None
    blame: Blame


_E = health_.Event
# fmt: off
RULES: Final[Mapping[Kind, Rule]] = MappingProxyType({
    Kind.SUCCESS:          Rule(Failover.DONE, Charge.USAGE, CooldownRule.CLEAR, _E.CALL_OK,
                                Blame.NONE),
    Kind.RATE_LIMITED:     Rule(Failover.NEXT, Charge.REQUEST_ONLY, CooldownRule.RETRY_AFTER,
                                _E.CALL_RATE_LIMITED, Blame.CAPACITY),
    Kind.QUOTA_EXHAUSTED:  Rule(Failover.NEXT, Charge.REQUEST_ONLY, CooldownRule.DAILY_RESET,
                                _E.CALL_RATE_LIMITED, Blame.CAPACITY),
    Kind.INVALID_KEY:      Rule(Failover.NEXT, Charge.REQUEST_ONLY, CooldownRule.NONE,
                                _E.CALL_INVALID, Blame.UPSTREAM),
    Kind.PAYMENT_REQUIRED: Rule(Failover.NEXT, Charge.REQUEST_ONLY, CooldownRule.KEY_DAY,
                                _E.CALL_ERROR, Blame.UPSTREAM),
    Kind.UNKNOWN_MODEL:    Rule(Failover.NEXT_MODEL, Charge.REQUEST_ONLY, CooldownRule.MODEL_DAY,
                                None, Blame.UPSTREAM),
    Kind.CONTEXT_TOO_LONG: Rule(Failover.LARGER_CONTEXT, Charge.REQUEST_ONLY, CooldownRule.NONE,
                                None, Blame.CLIENT),
    Kind.BAD_REQUEST:      Rule(Failover.CLIENT, Charge.REQUEST_ONLY, CooldownRule.NONE, None,
                                Blame.CLIENT),
    Kind.UPSTREAM_ERROR:   Rule(Failover.NEXT_PROVIDER, Charge.REQUEST_ONLY, CooldownRule.BACKOFF,
                                _E.CALL_ERROR, Blame.UPSTREAM),
    Kind.BROKEN_RESPONSE:  Rule(Failover.NEXT_PROVIDER, Charge.USAGE, CooldownRule.BACKOFF,
                                _E.CALL_ERROR, Blame.UPSTREAM),
    Kind.TIMEOUT:          Rule(Failover.NEXT_PROVIDER, Charge.USAGE, CooldownRule.BACKOFF,
                                _E.CALL_ERROR, Blame.UPSTREAM),
    Kind.CONNECTION_ERROR: Rule(Failover.NEXT_PROVIDER, Charge.REQUEST_ONLY, CooldownRule.BACKOFF,
                                _E.CALL_ERROR, Blame.UPSTREAM),
    Kind.CANCELLED:        Rule(Failover.DONE, Charge.USAGE, CooldownRule.NONE, None, Blame.NONE),
})
# fmt: on

RATE_LIMIT_DEFAULT_S: Final = 60.0
"""A per-minute 429 without Retry-After: wait one whole window."""
ROLLING_DAY_DEFAULT_S: Final = 3600.0
"""A per-day 429 on a rolling day without a reset time: look again in an hour (one 429 an hour)."""
DAY_S: Final = 86_400.0


@attrs.frozen
class Outcome:
    kind: Kind
    status: int | None = None
    message: str = ""
    retry_after: float | None = None  # seconds from the answer
    ceilings: tuple[Ceiling, ...] = ()

    @property
    def rule(self) -> Rule:
        return RULES[self.kind]


# --- classification -----------------------------------------------------------------------------

_CONTEXT_PATTERNS: Final = re.compile(
    r"context[ _-]?(length|window)|maximum context|too many tokens|prompt is too long"
    r"|reduce the length|input is too long|exceeds the (model'?s )?(max|limit)",
    re.IGNORECASE,
)
# Gemini refuses a bad key with a 400 INVALID_ARGUMENT whose message says so.
_INVALID_KEY_PATTERNS: Final = re.compile(
    r"API key not valid|API key expired|API_KEY_INVALID", re.IGNORECASE
)
_PER_DAY_PATTERNS: Final = re.compile(
    r"per[ -]day|daily|\bRPD\b|\bTPD\b|per month|/ ?month|monthly", re.IGNORECASE
)
_ZHIPU_RATE_LIMIT: Final = 1302
_ZHIPU_OVERLOADED: Final = 1305
_MESSAGE_LIMIT: Final = 500


def classify(
    status: int | None,
    headers: Mapping[str, str],
    body: bytes | str = b"",
    *,
    error: TransportError | None = None,
    now: float,
) -> Outcome:
    """The :class:`Outcome` of one upstream call.

    ``status`` is ``None`` when no response came (then ``error`` says why); ``headers`` have
    lower-case names; ``body`` is the response body, or the error event of a failed stream. Never
    raises on any provider input.
    """
    if error is TransportError.TIMEOUT:
        return Outcome(Kind.TIMEOUT, status, "the provider did not answer in time")
    if error is TransportError.CONNECT:
        return Outcome(Kind.CONNECTION_ERROR, status, "could not connect to the provider")
    if error is TransportError.PROTOCOL or status is None:
        return Outcome(Kind.BROKEN_RESPONSE, status, "the provider's response was broken")

    ceilings = parse_ratelimit_headers(headers, now=now)
    if 200 <= status < 300:
        return Outcome(Kind.SUCCESS, status, ceilings=ceilings)

    message = redact(_error_message(body))
    retry_after = parse_retry_after(headers, now=now)
    if status == 429:
        return _classify_429(body, message, retry_after, ceilings)
    kind = _BY_STATUS.get(status)
    if kind is None:
        if status == 400 and _INVALID_KEY_PATTERNS.search(message):
            kind = Kind.INVALID_KEY  # Gemini answers a bad key with 400 API_KEY_INVALID
        elif status == 413 or (status == 400 and _CONTEXT_PATTERNS.search(message)):
            kind = Kind.CONTEXT_TOO_LONG
        elif 400 <= status < 500:
            kind = Kind.BAD_REQUEST
        else:
            kind = Kind.UPSTREAM_ERROR
    return Outcome(kind, status, message, retry_after, ceilings)


_BY_STATUS: Final[Mapping[int, Kind]] = MappingProxyType(
    {
        401: Kind.INVALID_KEY,
        403: Kind.INVALID_KEY,
        402: Kind.PAYMENT_REQUIRED,
        404: Kind.UNKNOWN_MODEL,
        408: Kind.UPSTREAM_ERROR,
    }
)


def _classify_429(
    body: bytes | str, message: str, retry_after: float | None, ceilings: tuple[Ceiling, ...]
) -> Outcome:
    zhipu = parse_zhipu_code(body)
    if zhipu == _ZHIPU_OVERLOADED:
        return Outcome(Kind.UPSTREAM_ERROR, 429, message, retry_after, ceilings)
    signal = parse_gemini_error(body)
    if signal is not None:
        per_day = signal.per_day
        if per_day:
            retry_after = None  # a spent day comes back at the daily reset, whatever it says
        elif signal.retry_after is not None:
            retry_after = signal.retry_after
    else:
        # Groq ("... on requests per day (RPD)"), Cohere ("... 1000 API calls / month") and
        # the rest say it in words.
        per_day = zhipu != _ZHIPU_RATE_LIMIT and bool(_PER_DAY_PATTERNS.search(message))
    kind = Kind.QUOTA_EXHAUSTED if per_day else Kind.RATE_LIMITED
    return Outcome(kind, 429, message, retry_after, ceilings)


def _error_message(body: bytes | str) -> str:
    """The human message of an error body, in the shapes providers use; the raw text otherwise."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return text.strip()[:_MESSAGE_LIMIT]
    candidates: list[object] = []
    if isinstance(data, list) and data:
        data = data[0]  # Gemini on some endpoints wraps the error in a list
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            candidates += [error.get("message"), error.get("msg")]
        candidates += [error, data.get("message"), data.get("detail")]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate[:_MESSAGE_LIMIT]
    return text.strip()[:_MESSAGE_LIMIT]


_SECRET_LIKE: Final = re.compile(
    # Known key prefixes (OpenAI-style, Groq, Cerebras, NVIDIA, Hugging Face, GitHub, Google) ...
    r"\b(?:sk-|gsk_|csk-|nvapi-|hf_|ghp_|github_pat_|AIza)[-_A-Za-z0-9]{12,}"
    # ... and any unbroken run of 32+ letters and digits mixing both (Cohere, Mistral keys).
    # Model ids are broken up by "-", "/" or ".", so they survive.
    r"|\b(?=[A-Za-z]*[0-9])(?=[0-9]*[A-Za-z])[A-Za-z0-9]{32,}\b"
)


def redact(text: str) -> str:
    """``text`` with anything shaped like an API key replaced by ``[redacted]``.

    Providers sometimes quote the key they refused; such text must not reach logs or clients.
    The shell also removes the exact secret it sent, which this cannot know.
    """
    return _SECRET_LIKE.sub("[redacted]", text)


# --- consequences -------------------------------------------------------------------------------


def record(
    ledger: ledger_.Ledger,
    health: health_.Health,
    ticket: ledger_.Ticket,
    outcome: Outcome,
    *,
    tokens: int | None,
    now: float,
) -> tuple[ledger_.Ledger, health_.Health]:
    """Apply ``outcome``'s row of :data:`RULES` for the call made under ``ticket``.

    ``tokens`` is what the call is known to have used: the usage the response reported, or what a
    broken stream had streamed; ``None`` when nothing is known, and the estimate is kept.
    ``outcome.ceilings`` are not applied here: they were observed when the answer's head arrived
    (:func:`freellm.core.ledger.observe`), before a long stream's end could make them stale.
    """
    rule = RULES[outcome.kind]
    slot = ticket.slot
    charged = 0
    if rule.charge is Charge.USAGE:
        charged = ticket.tokens if tokens is None else tokens
    ledger = ledger_.settle(ledger, ticket, tokens=charged)
    ledger = _cool_down(ledger, rule.cooldown, slot, outcome, now)
    if rule.health is not None:
        error = None if outcome.kind is Kind.SUCCESS else _health_note(outcome)
        health = health_.apply(
            health, slot.provider, slot.key_id, rule.health, now=now, error=error
        )
    return ledger, health


def _health_note(outcome: Outcome) -> str:
    status = "" if outcome.status is None else f"{outcome.status} "
    note = f"{status}{outcome.kind.value}"
    return f"{note}: {outcome.message}"[:200] if outcome.message else note


def _cool_down(
    ledger: ledger_.Ledger,
    cooldown: CooldownRule,
    slot: ledger_.Slot,
    outcome: Outcome,
    now: float,
) -> ledger_.Ledger:
    slot_scope = slot.scope
    limit_scope = slot.key_scope if slot.model.account else slot_scope
    reason = outcome.kind.value
    if cooldown is CooldownRule.NONE:
        return ledger
    if cooldown is CooldownRule.CLEAR:
        return ledger_.clear_strikes(ledger, slot_scope)
    if cooldown is CooldownRule.RETRY_AFTER:
        wait = RATE_LIMIT_DEFAULT_S if outcome.retry_after is None else outcome.retry_after
        return ledger_.cool_down(ledger, limit_scope, until=now + wait, reason=reason)
    if cooldown is CooldownRule.DAILY_RESET:
        return ledger_.cool_down(
            ledger, limit_scope, until=daily_reset_at(slot, outcome, now), reason=reason
        )
    if cooldown is CooldownRule.KEY_DAY:
        return ledger_.cool_down(ledger, slot.key_scope, until=now + DAY_S, reason=reason)
    if cooldown is CooldownRule.MODEL_DAY:
        return ledger_.cool_down(ledger, slot.model_scope, until=now + DAY_S, reason=reason)
    return ledger_.backoff(
        ledger, slot_scope, now=now, reason=reason, at_least=outcome.retry_after or 0.0
    )


def daily_reset_at(slot: ledger_.Slot, outcome: Outcome, now: float) -> float:
    """When a per-day quota that the provider says is spent comes back.

    The provider's own reset time wins. Otherwise a calendar day ends at the zone's next local
    midnight; a rolling day is looked at again after :data:`ROLLING_DAY_DEFAULT_S`.
    """
    if outcome.retry_after is not None:
        return now + outcome.retry_after
    if slot.daily_reset != ROLLING:
        return local_day_bounds(now, slot.daily_reset)[1]
    return now + ROLLING_DAY_DEFAULT_S
