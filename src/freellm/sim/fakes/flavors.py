"""What differs between the OpenAI-dialect fakes: base path, models, rate-limit headers, 429s.

The shapes follow ``shared/data/providers.md``:

- ``openai``: a generic OpenAI-compatible server under ``/v1``: no rate-limit headers; a 429
  carries ``retry-after`` (whole seconds) and an OpenAI error with code ``rate_limit_exceeded``.
- ``groq`` (``/openai/v1``): on every chat answer ``x-ratelimit-{limit,remaining,reset}-requests``
  (requests per day) and ``-tokens`` (tokens per minute), resets as Go durations (``2m59.56s``);
  a 429 adds ``retry-after`` and Groq's "Rate limit reached for model ..." message.
- ``cerebras`` (``/v1``): ``x-ratelimit-{limit,remaining,reset}-requests-day`` and
  ``-tokens-minute``, resets in float seconds, on every chat answer and on 429s; the 429 body is
  Cerebras' top-level ``{"message", "type": "too_many_requests_error", "param", "code"}``.
- ``openrouter`` (``/api/v1``): no headers on success; a 429 carries ``x-ratelimit-limit``,
  ``-remaining`` and ``-reset`` (milliseconds since the epoch) and OpenRouter's error body.

Headers describe the model's caps, falling back to the key's account caps for a dimension the
model does not cap; a dimension capped by neither is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import attrs

from freellm.sim.fakes.caps import DAY, MINUTE, Dimension, Standing, Violation, WindowName

Headers = list[tuple[bytes, bytes]]
JSON = dict[str, Any]


@attrs.frozen
class Flavor:
    name: str
    prefix: str
    default_models: tuple[str, ...]


FLAVORS: Final[Mapping[str, Flavor]] = {
    flavor.name: flavor
    for flavor in (
        Flavor("openai", "/v1", ("fake-model",)),
        Flavor("groq", "/openai/v1", ("llama-3.3-70b-versatile", "llama-3.1-8b-instant")),
        Flavor("cerebras", "/v1", ("llama-3.3-70b", "qwen-3-235b-a22b-instruct-2507")),
        Flavor(
            "openrouter",
            "/api/v1",
            ("meta-llama/llama-3.3-70b-instruct:free", "deepseek/deepseek-chat-v3-0324:free"),
        ),
    )
}

# The (dimension, window) pairs each flavor reports in its headers.
REPORTED: Final[Mapping[str, tuple[tuple[Dimension, WindowName], ...]]] = {
    "openai": (),
    "groq": (("requests", "day"), ("tokens", "minute")),
    "cerebras": (("requests", "day"), ("tokens", "minute")),
    "openrouter": (),
}

Standings = Mapping[tuple[Dimension, WindowName], Standing]


def go_duration(seconds: float) -> str:
    """`seconds` as Go's ``time.Duration`` prints it, to the hundredth: ``2m59.56s``, ``500ms``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000, 2):g}ms"
    hundredths = round(seconds * 100)
    hours, rest = divmod(hundredths, 360_000)
    minutes, rest = divmod(rest, 6_000)
    secs = f"{rest / 100:g}s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def _seconds(value: float) -> str:
    return f"{value:.2f}"


def standing_headers(flavor: str, standings: Standings, *, resets: bool = True) -> Headers:
    """The rate-limit headers `flavor` sends with an answer, for the caps in `standings`
    (without the ``x-ratelimit-reset-*`` ones when `resets` is False)."""
    headers: Headers = []
    for dimension, window in REPORTED[flavor]:
        standing = standings.get((dimension, window))
        if standing is None:
            continue
        if flavor == "groq":
            values = (
                str(standing.limit),
                str(standing.remaining),
                go_duration(standing.reset_in),
            )
            suffix: str = dimension
        else:
            values = (str(standing.limit), str(standing.remaining), _seconds(standing.reset_in))
            suffix = f"{dimension}-{window}"
        for part, value in zip(("limit", "remaining", "reset"), values, strict=True):
            if resets or part != "reset":
                headers.append((f"x-ratelimit-{part}-{suffix}".encode(), value.encode()))
    return headers


def finite_retry(violation: Violation) -> float:
    """A request larger than the cap never fits; say "a whole window" rather than forever."""
    if math.isinf(violation.retry_after):
        return MINUTE if violation.window == "minute" else DAY
    return violation.retry_after


_GROQ_NAMES: Final = {
    ("requests", "minute"): "requests per minute (RPM)",
    ("requests", "day"): "requests per day (RPD)",
    ("tokens", "minute"): "tokens per minute (TPM)",
    ("tokens", "day"): "tokens per day (TPD)",
}


def rate_limited(
    flavor: str,
    violation: Violation,
    model: str,
    standings: Standings,
    epoch_now: float,
    *,
    hints: bool = True,
) -> tuple[Headers, JSON]:
    """The headers and body of `flavor`'s 429 for `violation` on `model`.

    Without `hints`, the same 429 says nothing of when to retry: no ``retry-after``, no reset
    header or time, no "Please try again in" in the message.
    """
    retry = finite_retry(violation)
    again = f" Please try again in {go_duration(retry)}." if hints else ""
    retry_after = [(b"retry-after", str(math.ceil(retry)).encode())] if hints else []
    dimension, window = violation.dimension, violation.window
    counts = f"Limit {violation.limit}, Used {violation.used}, Requested {violation.requested}"
    if flavor == "groq":
        message = (
            f"Rate limit reached for model `{model}` in organization `org_fake` service tier "
            f"`on_demand` on {_GROQ_NAMES[(dimension, window)]}: {counts}.{again}"
        )
        body: JSON = {
            "error": {"message": message, "type": dimension, "code": "rate_limit_exceeded"}
        }
        return retry_after + standing_headers(flavor, standings, resets=hints), body
    if flavor == "cerebras":
        what = "requests sent" if dimension == "requests" else "tokens processed"
        body = {
            "message": f"{dimension.capitalize()} per {window} limit exceeded - too many {what}.",
            "type": "too_many_requests_error",
            "param": "quota",
            "code": "request_quota_exceeded" if dimension == "requests" else "token_quota_exceeded",
        }
        return standing_headers(flavor, standings, resets=hints), body
    if flavor == "openrouter":
        reported = {
            "X-RateLimit-Limit": str(violation.limit),
            "X-RateLimit-Remaining": str(max(0, violation.limit - violation.used)),
        }
        if hints:
            reported["X-RateLimit-Reset"] = str(math.ceil((epoch_now + retry) * 1000))
        span = "min" if window == "minute" else "day"
        name = f"free-models-per-{span}" if dimension == "requests" else f"tokens-per-{span}"
        body = {
            "error": {
                "message": f"Rate limit exceeded: {name}. ",
                "code": 429,
                "metadata": {"headers": reported, "provider_name": None},
            },
            "user_id": "user_fake",
        }
        headers = [(key.lower().encode(), value.encode()) for key, value in reported.items()]
        return headers, body
    message = f"Rate limit reached for {dimension} per {window}: {counts}.{again}"
    body = {
        "error": {
            "message": message,
            "type": dimension,
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    return retry_after, body


def error_body(
    flavor: str, status: int, message: str, kind: str, code: str | None, param: str | None = None
) -> JSON:
    """An error body in `flavor`'s shape: OpenRouter's ``{code, message}``, else OpenAI's."""
    if flavor == "openrouter":
        return {"error": {"code": status, "message": message}}
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


INVALID_KEY_BODY: Final[JSON] = {
    "error": {
        "message": "Invalid API Key",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}
