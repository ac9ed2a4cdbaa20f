"""What providers tell us about their limits, read from response headers and 429 bodies.

Every function here takes untrusted provider output and returns a value or ``None``; none of
them raises on any input. Header names must already be lower-case (httpx's ``Headers`` and
the shell's own dicts both give them that way); values are matched case-insensitively where
case could vary (duration units) and surrounding whitespace is ignored.

Formats covered:

- ``retry-after-ms`` (milliseconds, as the OpenAI SDK reads it) and ``retry-after``
  (delta-seconds, possibly fractional, or an HTTP-date): :func:`parse_retry_after`.
- Rate-limit headers (:func:`parse_ratelimit_headers`):

  * Groq: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``. The request counts are
    per day and the token counts per minute; resets are Go-style durations (``2m59.56s``).
  * Mistral: the same ``limit``/``remaining`` names but no ``reset`` headers, and both
    dimensions are per minute. The two are told apart by the ``x-ratelimit-reset-requests``
    or ``x-ratelimit-reset-tokens`` header: present means Groq, absent means Mistral.
  * Cerebras: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}-{minute,day}``; resets
    are seconds from now as a float.
  * OpenRouter: ``x-ratelimit-{limit,remaining,reset}`` with no suffix; the reset is
    milliseconds since the epoch, and the dimension is requests over an unstated window.

- 429 bodies: Gemini's ``RESOURCE_EXHAUSTED`` error with ``QuotaFailure`` and ``RetryInfo``
  details (:func:`parse_gemini_error`) and Zhipu's business codes (:func:`parse_zhipu_code`).
  Whether any other 429 (Groq's, Cohere's ``{"message": ...}``) is per day is read from its
  words, in :mod:`freellm.core.outcome`.
"""

import calendar
import email.utils
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Final, Literal

import attrs

Dimension = Literal["requests", "tokens"]
WindowName = Literal["minute", "day", "unknown"]

# Untrusted values longer than this are not numbers or durations any provider sends; refusing
# them early bounds the regex work, and (numbers having no exponent) keeps every float finite.
_MAX_VALUE_LEN: Final = 64

_NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_NUMBER_RE: Final = re.compile(rf"-?{_NUMBER}")
# Go's time.Duration.String() layout, which Groq uses: units in descending order, each at most
# once. In "500ms" the minutes group first takes "500m", fails at the "s", and backtracks.
_DURATION_RE: Final = re.compile(
    rf"(?:(?P<h>{_NUMBER})h)?"
    rf"(?:(?P<m>{_NUMBER})m)?"
    rf"(?:(?P<s>{_NUMBER})s)?"
    rf"(?:(?P<ms>{_NUMBER})ms)?"
    rf"(?:(?P<us>{_NUMBER})(?:us|\u00b5s|\u03bcs))?"
    rf"(?:(?P<ns>{_NUMBER})ns)?"
)
_DURATION_UNITS: Final = (
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 1e-3),
    ("us", 1e-6),
    ("ns", 1e-9),
)

_Parser = Callable[[str], float | None]


@attrs.frozen
class Ceiling:
    """What a provider told us is left: at most `remaining` more of `dimension` until `reset_at`.

    `limit` is the provider's stated limit for that window, if it said; `reset_at` is in epoch
    seconds, or None when the provider gave no reset time. Constructing one with a negative
    `remaining` or `limit` raises ``ValueError``.
    """

    dimension: Dimension
    window: WindowName
    remaining: int = attrs.field(validator=attrs.validators.ge(0))
    limit: int | None = attrs.field(validator=attrs.validators.optional(attrs.validators.ge(0)))
    reset_at: float | None


@attrs.frozen
class QuotaSignal:
    """A 429 body's meaning.

    `per_day` is True when a daily (or longer) quota is exhausted, so the key should cool down
    until the daily reset, and False for a short-window limit. `retry_after` is in seconds, or
    None when the body gave no delay. Constructing one with a negative `retry_after` raises
    ``ValueError``.
    """

    per_day: bool
    retry_after: float | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.ge(0.0))
    )
    quota_id: str | None
    message: str


# --- scalars ---------------------------------------------------------------------------------


def _parse_number(text: str) -> float | None:
    """Return the finite decimal number in `text` (sign allowed, no exponent), else None."""
    text = text.strip()
    if len(text) > _MAX_VALUE_LEN or _NUMBER_RE.fullmatch(text) is None:
        return None
    return float(text)


def _parse_nonnegative(text: str) -> float | None:
    """Return the number in `text` if it is at least 0, else None."""
    value = _parse_number(text)
    return value if value is not None and value >= 0 else None


def parse_duration(text: str) -> float | None:
    """Return the seconds in a Groq-style duration, or None if `text` is not one.

    Accepts Go ``time.Duration`` strings such as ``"2m59.56s"``, ``"7.66s"``, ``"1h2m3s"``,
    ``"500ms"``, ``"0.5s"`` and ``"1m"`` (units case-insensitive, each at most once, largest
    first; ``us``/``µs`` and ``ns`` too), and a bare number of seconds such as ``"12.5"``.
    Negative, empty, over-long or otherwise unparseable text gives None; nothing is raised.
    """
    text = text.strip().lower()
    if len(text) > _MAX_VALUE_LEN:
        return None
    if _NUMBER_RE.fullmatch(text) is not None:
        return _parse_nonnegative(text)
    match = _DURATION_RE.fullmatch(text)
    if match is None or not text:
        return None
    total = 0.0
    for group, scale in _DURATION_UNITS:
        part = match.group(group)
        if part is not None:
            total += float(part) * scale
    return total


def _parse_http_date(text: str, *, now: float) -> float | None:
    """Return seconds from `now` until the HTTP-date `text`, or None if it is not a date.

    Computed with ``calendar.timegm`` rather than ``email.utils.mktime_tz``, which falls back
    to the local time zone (a hidden input) when the date has no zone; here no zone means UTC.
    """
    try:
        parsed = email.utils.parsedate_tz(text)
        if parsed is None:
            return None
        epoch = calendar.timegm(parsed[:9]) - (parsed[9] or 0)
    except (ValueError, OverflowError, IndexError, TypeError):
        # parsedate_tz and timegm reject some malformed dates (year 0, month 13) by raising.
        return None
    return epoch - now


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Return how many seconds to wait from `now`, or None when the headers do not say.

    Precondition: the names in `headers` are lower-case. ``retry-after-ms`` (milliseconds)
    wins; when it is absent or unparseable, ``retry-after`` is read as delta-seconds (possibly
    fractional) or as an HTTP-date, taken relative to `now` (epoch seconds). A negative
    result (a date in the past) is clamped to 0. Nothing is raised.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        value = _parse_number(millis)
        if value is not None:
            return max(0.0, value / 1000)
    text = headers.get("retry-after")
    if text is None:
        return None
    seconds = _parse_number(text)
    if seconds is None:
        seconds = _parse_http_date(text, now=now)
    return None if seconds is None else max(0.0, seconds)


# --- rate-limit headers ----------------------------------------------------------------------

# Which window each dimension's counts cover when the header names do not say.
_GROQ_WINDOWS: Final[tuple[tuple[Dimension, WindowName], ...]] = (
    ("requests", "day"),
    ("tokens", "minute"),
)
_MISTRAL_WINDOWS: Final[tuple[tuple[Dimension, WindowName], ...]] = (
    ("requests", "minute"),
    ("tokens", "minute"),
)
# Cerebras names the window in the header; Cerebras documents requests-day and tokens-minute,
# the other two are read in case it starts sending them.
_CEREBRAS_WINDOWS: Final[tuple[tuple[Dimension, WindowName], ...]] = (
    ("requests", "minute"),
    ("requests", "day"),
    ("tokens", "minute"),
    ("tokens", "day"),
)


def _parse_remaining(text: str) -> int | None:
    """Return a remaining count: a number rounded down, negatives clamped to 0; else None."""
    value = _parse_number(text)
    return None if value is None else max(0, math.floor(value))


def _parse_limit(text: str) -> int | None:
    """Return a stated limit: a non-negative number rounded down; else None."""
    value = _parse_nonnegative(text)
    return None if value is None else math.floor(value)


@attrs.frozen
class _Row:
    """One ceiling's headers: ``x-ratelimit-{remaining,limit,reset}<suffix>``, named once."""

    dimension: Dimension
    window: WindowName
    remaining: str
    limit: str
    reset: str

    @classmethod
    def of(cls, dimension: Dimension, window: WindowName, suffix: str) -> "_Row":
        names = (f"x-ratelimit-{part}{suffix}" for part in ("remaining", "limit", "reset"))
        return cls(dimension, window, *names)


def _ceiling(headers: Mapping[str, str], row: _Row, reset_at: float | None) -> Ceiling | None:
    """Return the ceiling in ``row``'s headers, or None.

    A ceiling needs a parseable remaining count: a limit alone says nothing about what is left.
    """
    remaining_text = headers.get(row.remaining)
    remaining = None if remaining_text is None else _parse_remaining(remaining_text)
    if remaining is None:
        return None
    limit_text = headers.get(row.limit)
    limit = None if limit_text is None else _parse_limit(limit_text)
    return Ceiling(
        dimension=row.dimension,
        window=row.window,
        remaining=remaining,
        limit=limit,
        reset_at=reset_at,
    )


def _relative_reset(text: str | None, *, now: float, parse: _Parser) -> float | None:
    """Return `now` plus the delay in `text` read by `parse`, or None if absent or unparseable."""
    if text is None:
        return None
    delay = parse(text)
    return None if delay is None else now + delay


_GROQ_ROWS: Final = tuple(_Row.of(d, w, f"-{d}") for d, w in _GROQ_WINDOWS)
_MISTRAL_ROWS: Final = tuple(_Row.of(d, w, f"-{d}") for d, w in _MISTRAL_WINDOWS)
_CEREBRAS_ROWS: Final = tuple(_Row.of(d, w, f"-{d}-{w}") for d, w in _CEREBRAS_WINDOWS)
_OPENROUTER_ROW: Final = _Row.of("requests", "unknown", "")


def _groq_or_mistral(headers: Mapping[str, str], *, now: float) -> list[Ceiling]:
    is_groq = "x-ratelimit-reset-requests" in headers or "x-ratelimit-reset-tokens" in headers
    rows = _GROQ_ROWS if is_groq else _MISTRAL_ROWS
    return _read_rows(headers, rows, now=now, parse=parse_duration)


def _cerebras(headers: Mapping[str, str], *, now: float) -> list[Ceiling]:
    return _read_rows(headers, _CEREBRAS_ROWS, now=now, parse=_parse_nonnegative)


def _read_rows(
    headers: Mapping[str, str], rows: tuple[_Row, ...], *, now: float, parse: _Parser
) -> list[Ceiling]:
    """Ceilings from ``x-ratelimit-{limit,remaining,reset}<suffix>`` for each row."""
    found: list[Ceiling] = []
    for row in rows:
        if row.remaining not in headers:
            continue  # the common case: most providers send none of them
        reset_at = _relative_reset(headers.get(row.reset), now=now, parse=parse)
        ceiling = _ceiling(headers, row, reset_at)
        if ceiling is not None:
            found.append(ceiling)
    return found


def _openrouter(headers: Mapping[str, str]) -> list[Ceiling]:
    if _OPENROUTER_ROW.remaining not in headers:
        return []
    reset_text = headers.get(_OPENROUTER_ROW.reset)
    reset_ms = None if reset_text is None else _parse_nonnegative(reset_text)
    reset_at = None if reset_ms is None else reset_ms / 1000
    ceiling = _ceiling(headers, _OPENROUTER_ROW, reset_at)
    return [] if ceiling is None else [ceiling]


def parse_ratelimit_headers(headers: Mapping[str, str], *, now: float) -> tuple[Ceiling, ...]:
    """Return the ceilings stated by any known rate-limit headers, or ``()`` if there are none.

    Precondition: the names in `headers` are lower-case. `now` (epoch seconds) anchors the
    relative resets of Groq and Cerebras. Ceilings come in a fixed order: Groq or Mistral
    (requests, tokens), then Cerebras (requests-minute, requests-day, tokens-minute,
    tokens-day), then OpenRouter. A ceiling whose remaining count is missing or unparseable is
    left out; an unparseable limit or reset becomes None. Nothing is raised.
    """
    if not any(name.startswith("x-ratelimit-") for name in headers):
        return ()
    return (
        *_groq_or_mistral(headers, now=now),
        *_cerebras(headers, now=now),
        *_openrouter(headers),
    )


# --- 429 bodies ------------------------------------------------------------------------------

_RETRY_IN_RE: Final = re.compile(r"retry in\s+((?:[0-9]+(?:\.[0-9]+)?(?:ms|h|m|s))+)", re.I)
_QUOTA_FAILURE: Final = "google.rpc.QuotaFailure"
_RETRY_INFO: Final = "google.rpc.RetryInfo"


def _load_json(body: bytes | str) -> object:
    """Return the decoded JSON value of `body`, or None for non-UTF-8 bytes or invalid JSON."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        return json.loads(text)
    except (ValueError, RecursionError):
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting recurses.
        return None


def _error_object(value: object) -> dict[str, object] | None:
    """Return the ``error`` object of ``{"error": {...}}``, or None.

    Google's non-SSE streaming endpoint wraps the same error in a one-element list, so a list
    whose first item has that shape is accepted too.
    """
    if isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, dict):
        return None
    error = value.get("error")
    return error if isinstance(error, dict) else None


def _dicts(value: object) -> list[dict[str, object]]:
    """Return the dicts in `value` if it is a list, else an empty list."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def parse_gemini_error(body: bytes | str) -> QuotaSignal | None:
    """Return the meaning of Gemini's 429 ``RESOURCE_EXHAUSTED`` body, or None.

    The body is ``{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": ...,
    "details": [...]}}``; either the code or the status is enough to recognise it. In
    ``details``, a ``google.rpc.QuotaFailure`` lists ``violations[].quotaId``: any id
    containing "PerDay" makes the signal `per_day`, and `quota_id` is the first per-day id, or
    the first id when none is per-day. A ``google.rpc.RetryInfo``'s ``retryDelay`` ("53s")
    and the message's "Please retry in 53.2s" give `retry_after`: the later of the two, since
    ``retryDelay`` is the message's delay rounded down to whole seconds. Returns None
    when the body is not JSON or not that shape; never raises, whatever the input.
    """
    error = _error_object(_load_json(body))
    if error is None:
        return None
    if error.get("status") != "RESOURCE_EXHAUSTED" and error.get("code") != 429:
        return None
    raw_message = error.get("message")
    message = raw_message if isinstance(raw_message, str) else ""
    quota_ids: list[str] = []
    retry_after = None
    for detail in _dicts(error.get("details")):
        kind = detail.get("@type")
        if not isinstance(kind, str):
            continue
        if kind.endswith(_QUOTA_FAILURE):
            for violation in _dicts(detail.get("violations")):
                quota_id = violation.get("quotaId")
                if isinstance(quota_id, str):
                    quota_ids.append(quota_id)
        elif kind.endswith(_RETRY_INFO) and retry_after is None:
            delay = detail.get("retryDelay")
            if isinstance(delay, str):
                retry_after = parse_duration(delay)
    match = _RETRY_IN_RE.search(message)
    said = parse_duration(match.group(1)) if match is not None else None
    if said is not None and (retry_after is None or said > retry_after):
        retry_after = said
    per_day_ids = [quota_id for quota_id in quota_ids if "perday" in quota_id.lower()]
    chosen = per_day_ids or quota_ids
    return QuotaSignal(
        per_day=bool(per_day_ids),
        retry_after=retry_after,
        quota_id=chosen[0] if chosen else None,
        message=message,
    )


def parse_zhipu_code(body: bytes | str) -> int | None:
    """Return Zhipu's business error code from ``{"error": {"code": "1302", ...}}``, or None.

    The code may be a JSON string of ASCII digits or a non-negative integer (1302: the user's
    rate limit, 1305: the platform is overloaded). Any other body or code gives None; never
    raises.
    """
    error = _error_object(_load_json(body))
    if error is None:
        return None
    code = error.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code if code >= 0 else None
    if isinstance(code, str):
        digits = code.strip()
        if len(digits) <= _MAX_VALUE_LEN and re.fullmatch(r"[0-9]+", digits):
            return int(digits)
    return None
