"""The dashboard: its pages and the JSON ``/api`` they call, on quart-trio.

Imported only when the first such request arrives, so a server that only proxies never loads
Quart (about 8 MB of RSS). The dashboard's two streams, ``/api/events`` and the playground's
``/api/chat/completions``, are plain ASGI in front (:mod:`freellm.web.streams`).

Every ``/api`` route but ``POST /api/login`` needs the session cookie or the unified key as
bearer (:mod:`freellm.web.auth`); a call that changes something with the cookie also needs the
``X-CSRF-Token`` header. Pages need the session and send whoever has none to ``/login``. Every
answer carries a content security policy that allows only this server's own scripts and styles.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from quart import Response, redirect, render_template, request
from quart_trio import QuartTrio

from freellm.shell.runtime import Runtime
from freellm.web import v1
from freellm.web.api import error_response, raw_headers, register_api
from freellm.web.auth import Access, access, session_of

__all__ = ["PAGES", "create_dashboard"]

PAGES: Final = {
    "/": ("overview", "Overview"),
    "/keys": ("keys", "Keys"),
    "/chain": ("chain", "Fallback chain"),
    "/playground": ("playground", "Playground"),
    "/analytics": ("analytics", "Analytics"),
    "/quotas": ("quotas", "Quotas"),
}
OPEN_PATHS: Final = frozenset({"/login", "/api/login"})
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def create_dashboard(runtime: Runtime) -> QuartTrio:
    # The static files are served from memory (:class:`Assets`), not by Quart's file responses,
    # which leave a file open when the browser gives up on one (a reload mid-request).
    quart = QuartTrio("freellm.web", static_folder=None)
    assets = Assets(Path(__file__).parent / "static")
    # Quart cuts responses after 60 s by default; deadlines belong to the shell.
    quart.config["RESPONSE_TIMEOUT"] = None
    # A body gets as long as on /v1, read when the app is built (so a test can shorten it).
    quart.config["BODY_TIMEOUT"] = v1.BODY_TIMEOUT_S
    quart.config["MAX_CONTENT_LENGTH"] = 1024 * 1024

    @quart.before_request
    async def authorize() -> Any:
        path = request.path
        if path.startswith("/static/") or path in OPEN_PATHS:
            return None
        headers = raw_headers()
        if path.startswith("/api/"):
            allowed = access(runtime, request.method, headers)
            if allowed is Access.DENIED:
                return error_response(
                    401,
                    "Log in, or send the unified freellm key as `Authorization: Bearer <key>`.",
                    code="invalid_api_key",
                )
            if allowed is Access.NO_CSRF:
                return error_response(
                    403,
                    "This call changes something: send the page's CSRF token as X-CSRF-Token.",
                    code="csrf_token_invalid",
                )
            return None
        if session_of(runtime, headers) is None:
            return redirect(f"/login?next={quote(path)}")
        return None

    @quart.after_request
    async def secure(response: Response) -> Response:
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        response.headers.update(SECURITY_HEADERS)
        return response

    async def page(path: str) -> str:
        name, title = PAGES[path]
        session = session_of(runtime, raw_headers())
        return await render_template(
            f"{name}.html",
            page=name,
            title=title,
            pages=PAGES,
            csrf_token=session.csrf_token if session else "",
            strategy=runtime.holder.state.catalog.settings.strategy.value,
        )

    for path in PAGES:
        quart.add_url_rule(path, f"page_{PAGES[path][0]}", _bind(page, path), methods=["GET"])

    @quart.get("/login")
    async def login_page() -> Any:
        if session_of(runtime, raw_headers()) is not None:
            return redirect(_safe_next(request.args.get("next")))
        return await render_template("login.html", page="login", title="Log in", pages={})

    @quart.get("/static/<path:name>")
    async def static(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            return Response("Not found", status=404, content_type="text/plain")
        data, kind = found
        response = Response(data, content_type=kind)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    register_api(quart, runtime)

    @quart.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        if request.path.startswith("/api/"):
            return error_response(404, f"Unknown endpoint {request.path}.", code="not_found")
        return Response("Not found", status=404, content_type="text/plain")

    @quart.errorhandler(405)
    async def not_allowed(error: Exception) -> Response:
        response = error_response(
            405, f"{request.method} is not allowed on {request.path}.", code="method_not_allowed"
        )
        allowed = getattr(error, "valid_methods", None) or ()
        response.headers["Allow"] = ", ".join(sorted(allowed))  # RFC 9110: a 405 says which
        return response

    @quart.errorhandler(413)
    async def too_large(_: Exception) -> Response:
        return error_response(413, "The request body is too large.", code="request_too_large")

    @quart.errorhandler(408)
    async def too_slow(_: Exception) -> Response:
        return error_response(
            408,
            f"The request body did not arrive within {v1.BODY_TIMEOUT_S:g} s.",
            code="request_timeout",
        )

    return quart


class Assets:
    """The files under ``root``, read once each and kept: a few hundred KB in all."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[str, tuple[bytes, str] | None] = {}

    def get(self, name: str) -> tuple[bytes, str] | None:
        """The bytes and content type of ``name``, or None when there is no such file under
        the root (``..`` cannot leave it)."""
        if name not in self._cache:
            path = (self.root / name).resolve()
            if not path.is_relative_to(self.root) or not path.is_file():
                return None  # not remembered: a miss costs a stat, and names are unbounded
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
                kind += "; charset=utf-8"
            self._cache[name] = (path.read_bytes(), kind)
        return self._cache[name]


def _bind(page: Any, path: str) -> Any:
    async def view() -> str:
        return str(await page(path))

    return view


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never ``//elsewhere`` or a full URL."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target
