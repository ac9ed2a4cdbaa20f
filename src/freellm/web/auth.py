"""Who may use the dashboard and ``/api``: a session cookie (plus its CSRF token on a call that
changes something) or the unified key as bearer, read from raw ASGI headers so that the plain
ASGI routes and the Quart ones decide alike."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie

from freellm.shell.logins import COOKIE, Session
from freellm.shell.runtime import Runtime

__all__ = ["SAFE_METHODS", "Access", "access", "cookie_of", "session_of"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(enum.Enum):
    BEARER = "bearer"
    SESSION = "session"
    NO_CSRF = "no_csrf"  # a good session cookie, on a call that changes something, with no token
    DENIED = "denied"


def cookie_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The session cookie's value, if the request carries one."""
    for name, value in headers:
        if name == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                continue
            morsel = jar.get(COOKIE)
            if morsel is not None:
                return morsel.value
    return None


def session_of(runtime: Runtime, headers: Iterable[tuple[bytes, bytes]]) -> Session | None:
    return runtime.logins.session(cookie_of(headers))


def access(runtime: Runtime, method: str, headers: list[tuple[bytes, bytes]]) -> Access:
    """How a request is allowed in, if at all. The bearer key is checked first: a script that
    sends it needs no cookie and no CSRF token."""
    if runtime.authorized(headers):
        return Access.BEARER
    session = session_of(runtime, headers)
    if session is None:
        return Access.DENIED
    if method in SAFE_METHODS:
        return Access.SESSION
    token = next((v.decode("latin-1") for k, v in headers if k == b"x-csrf-token"), None)
    return Access.SESSION if runtime.logins.csrf_ok(session, token) else Access.NO_CSRF
