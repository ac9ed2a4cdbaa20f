"""Dashboard logins: the unified key opens a session cookie; logout, expiry or a new key ends it.

Theory of operation
-------------------
A session is a random id and an expiry, signed: the cookie is ``id.expires.signature``, where the
signature is an HMAC-SHA256 under a key derived from the *current unified key*. Regenerating the
unified key (from the dashboard, or with ``freellm token --regenerate`` in another process, which
reaches the server within a second) therefore ends every session at once, with nothing to sweep.
Logout ends one session before its time: its id is remembered as revoked until it would have
expired anyway, in the store too, so that a restart does not bring it back.

State-changing calls made with the cookie must also carry ``X-CSRF-Token``: an HMAC of the session
id under the same derived key. A page of another site can make the browser send the cookie (though
``SameSite=Strict`` already stops that in current browsers) but cannot read the token.

Failed logins are limited per client address: :data:`MAX_FAILURES` in :data:`FAILURE_WINDOW_S`,
then the address waits until the oldest of them leaves the window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final

import attrs

from freellm.shell.secrets import unified_key_matches

__all__ = [
    "COOKIE",
    "FAILURE_WINDOW_S",
    "MAX_FAILURES",
    "Login",
    "Logins",
    "Session",
    "Throttled",
]

COOKIE: Final = "freellm_session"
MAX_FAILURES: Final = 5
FAILURE_WINDOW_S: Final = 60.0
MAX_TRACKED_CLIENTS: Final = 10_000
"""Failed-login records kept at most; past it the stalest client is forgotten."""


@attrs.frozen
class Login:
    """A session just opened: the cookie's value, its CSRF token and when it expires."""

    cookie: str
    csrf_token: str
    expires: float


@attrs.frozen
class Session:
    id: str
    expires: float
    csrf_token: str


@attrs.frozen
class Throttled:
    """Too many failed logins from this client: try again at ``retry_at``."""

    retry_at: float


class Logins:
    """Opens, checks and ends dashboard sessions.

    ``unified_key`` gives the current unified key (it may change while the server runs);
    ``clock`` gives epoch seconds; ``lifetime_s`` is how long a login lasts.
    """

    def __init__(
        self,
        unified_key: Callable[[], str],
        *,
        clock: Callable[[], float],
        lifetime_s: Callable[[], float],
        revoked: Mapping[str, float] | None = None,
    ) -> None:
        self._unified_key = unified_key
        self._clock = clock
        self._lifetime_s = lifetime_s
        self._revoked: dict[str, float] = dict(revoked or {})  # id: when it expires anyway
        self._failures: dict[str, deque[float]] = {}
        self._derived: tuple[str, bytes] | None = None

    @property
    def revoked(self) -> dict[str, float]:
        """The sessions logged out before their expiry, still to be refused (id: expiry)."""
        now = self._clock()
        self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
        return dict(self._revoked)

    def login(self, given: str, client: str) -> Login | Throttled | None:
        """A new session if ``given`` is the unified key; ``None`` if it is not; or
        :class:`Throttled` while ``client`` has failed too often (the key is not even looked at)."""
        now = self._clock()
        failures = self._failures.get(client)
        if failures is not None:
            while failures and failures[0] <= now - FAILURE_WINDOW_S:
                failures.popleft()
            if len(failures) >= MAX_FAILURES:
                return Throttled(failures[0] + FAILURE_WINDOW_S)
        if not unified_key_matches(given, self._unified_key()):
            self._fail(client, now)
            return None
        self._failures.pop(client, None)
        session_id = secrets.token_urlsafe(18)
        expires = now + self._lifetime_s()
        payload = f"{session_id}.{int(expires)}"
        return Login(
            f"{payload}.{self._sign(payload)}", self._sign("csrf:" + session_id), int(expires)
        )

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, if it is signed under the current unified key, not
        expired and not logged out."""
        if not cookie:
            return None
        session_id, _, rest = cookie.partition(".")
        expires_text, _, signature = rest.partition(".")
        if not session_id or not expires_text.isdigit() or not signature:
            return None
        payload = f"{session_id}.{expires_text}"
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        expires = float(expires_text)
        if expires <= self._clock() or session_id in self._revoked:
            return None
        return Session(session_id, expires, self._sign("csrf:" + session_id))

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, session.csrf_token)

    def logout(self, session: Session) -> None:
        self._revoked[session.id] = session.expires

    # -- internals --

    def _sign(self, text: str) -> str:
        key = self._unified_key()
        if self._derived is None or self._derived[0] != key:
            derived = hmac.digest(key.encode(), b"freellm dashboard sessions", hashlib.sha256)
            self._derived = (key, derived)
        mac = hmac.digest(self._derived[1], text.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _fail(self, client: str, now: float) -> None:
        failures = self._failures.get(client)
        if failures is None:
            if len(self._failures) >= MAX_TRACKED_CLIENTS:
                stalest = min(self._failures, key=lambda c: self._failures[c][-1])
                del self._failures[stalest]
            failures = self._failures[client] = deque()
        failures.append(now)
