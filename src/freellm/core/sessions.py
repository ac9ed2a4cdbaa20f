"""Sticky sessions: a conversation stays on the model that answered its first turn.

A session is named by the client's ``X-Session-Id`` header, else the body's ``user``, else a hash
of the system prompt and the first user message (which every later turn of a conversation repeats).
A binding lives ``ttl`` seconds after the session was last seen; the table holds at most
``max_size`` bindings, dropping the expired ones and then the least recently seen when full.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import immutables

__all__ = ["Binding", "Sessions", "bind", "from_data", "lookup", "session_key", "to_data"]


@attrs.frozen
class Binding:
    provider: str
    model: str
    last_seen: float


@attrs.frozen
class Sessions:
    bindings: immutables.Map[str, Binding] = attrs.field(factory=immutables.Map)


def session_key(
    header: str | None, user: object, messages: Sequence[Mapping[str, Any]] | None
) -> str | None:
    """The name of the session a request belongs to, or ``None`` when it has none.

    Header and ``user`` values are taken as given; the fallback is a SHA-256 over the system
    prompt and the first user message, so no conversation text is kept.
    """
    if header:
        return f"h:{header}"
    if isinstance(user, str) and user:
        return f"u:{user}"
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        return None
    system: object = None
    first_user: object = None
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role in ("system", "developer") and system is None:
            system = message.get("content")
        elif role == "user":
            first_user = message.get("content")
            break
    if first_user is None:
        return None
    text = json.dumps([system, first_user], sort_keys=True, ensure_ascii=False, default=str)
    # surrogatepass: a lone surrogate (JSON can spell one) must not stop the request.
    return "c:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def lookup(sessions: Sessions, key: str | None, *, now: float, ttl: float) -> Binding | None:
    """The live binding of ``key`` at ``now``, if any."""
    if key is None:
        return None
    binding = sessions.bindings.get(key)
    if binding is None or now - binding.last_seen >= ttl:
        return None
    return binding


def bind(
    sessions: Sessions,
    key: str | None,
    provider: str,
    model: str,
    *,
    now: float,
    ttl: float,
    max_size: int,
) -> Sessions:
    """``sessions`` with ``key`` bound to ``provider/model``, last seen at ``now``.

    When the table is over ``max_size``, expired bindings go first, then the least recently seen,
    down to half the size, so that the cost of trimming is shared by many binds.
    """
    if key is None or max_size <= 0:
        return sessions
    binding = Binding(provider, model, now)
    bindings = sessions.bindings.set(key, binding)
    if len(bindings) > max_size:
        kept = _trim(bindings.delete(key), now=now, ttl=ttl, keep=max(0, max_size // 2 - 1))
        bindings = kept.set(key, binding)  # the binding just made always stays
    return Sessions(bindings)


def _trim(
    bindings: immutables.Map[str, Binding], *, now: float, ttl: float, keep: int
) -> immutables.Map[str, Binding]:
    live = [(key, b) for key, b in bindings.items() if now - b.last_seen < ttl]
    if len(live) > keep:
        live.sort(key=lambda item: (item[1].last_seen, item[0]), reverse=True)
        live = live[:keep]
    return immutables.Map(live)


def to_data(sessions: Sessions) -> list[dict[str, Any]]:
    return [{"key": key, **attrs.asdict(b)} for key, b in sessions.bindings.items()]


def from_data(data: Any) -> Sessions:
    """Raises ``ValueError`` when ``data`` is not :func:`to_data`'s output."""
    try:
        bindings = {}
        for entry in data:
            key, provider, model = entry["key"], entry["provider"], entry["model"]
            last_seen = entry["last_seen"]
            if not all(isinstance(v, str) for v in (key, provider, model)) or isinstance(
                last_seen, bool
            ):
                raise TypeError(f"not a binding: {entry!r}")
            if not isinstance(last_seen, int | float):
                raise TypeError(f"not a time: {last_seen!r}")
            bindings[key] = Binding(provider, model, float(last_seen))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a session table: {exc!r}") from None
    return Sessions(immutables.Map(bindings))
