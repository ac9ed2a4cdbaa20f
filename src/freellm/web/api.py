"""The dashboard's JSON ``/api``, on the quart-trio app of :mod:`freellm.web.dashboard`.

Who may call it is decided before any of these handlers runs (the dashboard's ``authorize``):
the session cookie, with ``X-CSRF-Token`` on a call that changes something, or the unified key as
bearer. Bodies are structured and checked by :mod:`freellm.web.bodies`; errors are OpenAI-shaped,
as on ``/v1``. Every change applies at once: the handler reloads the live settings before it
answers, so the next request routes by it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from quart import Response, request
from quart_trio import QuartTrio

from freellm.core import quotas as quotas_
from freellm.core.catalog import AUTO, CHAIN_NAME, ConfigError, ModelKind, Strategy, with_chain
from freellm.core.keys import Refused, clean_label, clean_secret
from freellm.core.presets import PRESETS, preset
from freellm.core.router import Key
from freellm.core.wire import error_body
from freellm.shell import analytics as analytics_
from freellm.shell.live import STRATEGY_SETTING, UNIFIED_KEY_ID, UNIFIED_KEY_SETTING
from freellm.shell.logins import COOKIE, Login, Throttled
from freellm.shell.probes import check_key
from freellm.shell.runtime import Runtime
from freellm.shell.secrets import new_unified_key
from freellm.shell.store import KeyRecord, new_key_id
from freellm.web.auth import session_of
from freellm.web.bodies import BadBody, ChainBody, KeyPatch, LoginBody, NewKey, parse
from freellm.web.hints import hint_for

__all__ = ["error_response", "raw_headers", "register_api"]

MAX_REQUESTS_LISTED: Final = 200
TTFT_WINDOW: Final = "7d"  # what the "fastest first" preset measures by


def register_api(quart: QuartTrio, runtime: Runtime) -> None:
    """Add the ``/api`` routes to ``quart``."""
    store, settings = runtime.store, runtime.settings

    # --- sessions ---------------------------------------------------------------------------

    @quart.post("/api/login")
    async def login() -> Response:
        body = parse(await _body(), LoginBody)
        if isinstance(body, BadBody):
            return _bad(body)
        client = request.remote_addr or "?"
        opened = runtime.logins.login(body.token, client)
        if isinstance(opened, Throttled):
            wait = max(1, math.ceil(opened.retry_at - runtime.clock()))
            response = error_response(
                429, f"Too many failed logins: try again in {wait} s.", code="rate_limited"
            )
            response.headers["Retry-After"] = str(wait)
            return response
        if opened is None:
            return error_response(401, "That is not the unified key.", code="invalid_api_key")
        response = _json({"csrf_token": opened.csrf_token, "expires": opened.expires})
        _set_cookie(response, opened)
        return response

    @quart.post("/api/logout")
    async def logout() -> Response:
        session = session_of(runtime, raw_headers())
        if session is not None:
            runtime.logins.logout(session)
            await runtime.save_logouts()
        response = _json({"logged_out": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
        return response

    @quart.get("/api/token")
    async def token() -> Response:
        """The unified key, masked: it is never sent back once stored."""
        return _json({"masked": _masked(runtime.unified_key)})

    @quart.post("/api/token/regenerate")
    async def regenerate() -> Response:
        """A new unified key, shown once in this answer; every session (this one too) ends."""
        key = new_unified_key()
        sealed = await settings.vault.seal(UNIFIED_KEY_ID, "freellm", key)
        await store.set_setting(UNIFIED_KEY_SETTING, sealed.hex())
        await settings.load()
        response = _json({"token": key, "masked": _masked(key)})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
        return response

    # --- keys -------------------------------------------------------------------------------

    @quart.get("/api/keys")
    async def keys() -> Response:
        """The provider keys, without their secrets."""
        records = await store.list_keys()
        return _json({"data": [_key_data(runtime, record) for record in records]})

    @quart.post("/api/keys")
    async def add_key() -> Response:
        body = parse(await _body(), NewKey)
        if isinstance(body, BadBody):
            return _bad(body)
        if body.provider not in runtime.holder.state.catalog.providers:
            return error_response(
                400, f"There is no provider `{body.provider}` in the catalog.", param="provider"
            )
        secret = clean_secret(body.secret)
        if isinstance(secret, Refused):
            return _refused(secret)
        label = clean_label(body.label)
        if isinstance(label, Refused):
            return _refused(label)
        key_id = new_key_id()
        sealed = await settings.vault.seal(key_id, body.provider, secret)
        record = await store.add_key(body.provider, label, sealed, key_id=key_id)
        await settings.load()
        _check_soon(runtime, record)
        return _json(_key_data(runtime, record), status=201)

    @quart.route("/api/keys/<key_id>", methods=["PATCH"])
    async def edit_key(key_id: str) -> Response:
        body = parse(await _body(), KeyPatch)
        if isinstance(body, BadBody):
            return _bad(body)
        record = await store.get_key(key_id)
        if record is None:
            return _no_key(key_id)
        if body.enabled is None and body.label is None and body.secret is None:
            return error_response(400, "Send at least one of `enabled`, `label` and `secret`.")
        # Both are checked before anything changes: a refused field leaves the key as it was.
        secret = None if body.secret is None else clean_secret(body.secret)
        if isinstance(secret, Refused):
            return _refused(secret)
        label = None if body.label is None else clean_label(body.label)
        if isinstance(label, Refused):
            return _refused(label)
        if label is not None:
            await store.set_key_label(key_id, label)
        if secret is not None:
            sealed = await settings.vault.seal(key_id, record.provider, secret)
            await store.update_key_secret(key_id, sealed)
        if body.enabled is not None:
            await store.set_key_enabled(key_id, body.enabled)
        await settings.load()
        record = await store.get_key(key_id)
        if record is None:  # removed by another process meanwhile
            return _no_key(key_id)
        if body.secret is not None or body.enabled:
            _check_soon(runtime, record)
        return _json(_key_data(runtime, record))

    @quart.route("/api/keys/<key_id>", methods=["DELETE"])
    async def remove_key(key_id: str) -> Response:
        if not await store.remove_key(key_id):
            return _no_key(key_id)
        await settings.load()
        return _json({"id": key_id, "deleted": True})

    @quart.post("/api/keys/<key_id>/check")
    async def check(key_id: str) -> Response:
        record = await store.get_key(key_id)
        if record is None:
            return _no_key(key_id)
        key = runtime.holder.state.topology.key(record.provider, key_id)
        if key is None:
            return error_response(
                409, f"Key {key_id} is disabled or cannot be opened: enable it first."
            )
        await check_key(runtime.holder, runtime.upstreams, key, clock=runtime.clock)
        return _json(_key_data(runtime, record))

    # --- chain and catalog ------------------------------------------------------------------

    @quart.get("/api/chain")
    async def chain() -> Response:
        name = _chain_name(request.args.get("name"))
        if isinstance(name, Response):
            return name
        return _json(await _chain_data(runtime, name))

    @quart.put("/api/chain")
    async def set_chain() -> Response:
        body = parse(await _body(), ChainBody)
        if isinstance(body, BadBody):
            return _bad(body)
        name = None if body.name in (None, AUTO) else body.name
        catalog = runtime.holder.state.catalog
        seen: set[str] = set()
        kinds: set[ModelKind] = set()
        for n, entry in enumerate(body.entries):
            target = catalog.target(*entry.target.split("/", 1))
            if target is None:
                return error_response(
                    400,
                    f"`{entry.target}` is not a model of the catalog.",
                    param=f"entries[{n}].target",
                )
            if entry.target in seen:
                return error_response(
                    400, f"`{entry.target}` is in the chain twice.", param=f"entries[{n}].target"
                )
            seen.add(entry.target)
            kinds.add(target.model.kind)
            if len(kinds) > 1:
                return error_response(
                    400,
                    "A chain holds chat models or embedding models, not both: "
                    f"`{entry.target}` is not like the entries before it.",
                    param=f"entries[{n}].target",
                )
        enabled = [entry.target for entry in body.entries if entry.enabled]
        if not enabled:
            return error_response(
                400, "Keep at least one entry of the chain enabled.", param="entries"
            )
        try:
            with_chain(settings.catalog, enabled, name)
        except ConfigError as exc:
            return error_response(400, str(exc), param="entries")
        await store.set_chain([(entry.target, entry.enabled) for entry in body.entries], name)
        await settings.load()
        return _json(await _chain_data(runtime, name))

    @quart.delete("/api/chain")
    async def delete_chain() -> Response:
        """Forget the stored chain ``name``: a chain of the config file goes back to what the
        file says, one made on the dashboard is gone."""
        name = _chain_name(request.args.get("name"))
        if isinstance(name, Response):
            return name
        if name is None:
            return error_response(
                400, "The chain `auto` follows cannot be removed; set it instead.", param="name"
            )
        await store.set_chain(None, name)
        await settings.load()
        return _json(await _chain_data(runtime, None))

    # --- routing strategy --------------------------------------------------------------------

    @quart.get("/api/strategy")
    async def strategy() -> Response:
        return _json(await _strategy_data(runtime))

    @quart.put("/api/strategy")
    async def set_strategy() -> Response:
        try:
            body = json.loads(await _body())
        except ValueError:
            return error_response(400, "The body is not JSON.")
        if not isinstance(body, dict) or set(body) != {"strategy"}:
            return error_response(400, 'The body is {"strategy": ...}, nothing else.')
        value = body["strategy"]
        if value is not None and value not in STRATEGIES:
            choices = " or ".join(f"`{choice}`" for choice in STRATEGIES)
            return error_response(
                400, f"`strategy` must be {choices} (or null for the config's).", param="strategy"
            )
        await store.set_setting(STRATEGY_SETTING, value)
        await settings.load()
        return _json(await _strategy_data(runtime))

    @quart.get("/api/catalog")
    async def catalog() -> Response:
        state = runtime.holder.state
        counts: dict[str, int] = {}
        for record in await store.list_keys():
            counts[record.provider] = counts.get(record.provider, 0) + 1
        providers = []
        for provider in state.catalog.providers.values():
            providers.append(
                {
                    "id": provider.id,
                    "name": provider.name,
                    "dialect": provider.dialect.value,
                    "keys": counts.get(provider.id, 0),
                    "key_hint": hint_for(provider.id),
                    "models": [
                        _model_data(provider.id, model) for model in provider.models.values()
                    ],
                }
            )
        name = _chain_name(request.args.get("chain"))  # the presets order this chain
        if isinstance(name, Response):
            return name
        chain, _source = await _chain_entries(runtime, name)
        entries = [entry for entry, _enabled in chain]
        measured = await analytics_.analytics_report(store, TTFT_WINDOW, now=runtime.clock())
        ttft = {
            row["target"]: row["ttft_ms"]["p50"]
            for row in measured["models"]
            if row["target"] and row["ttft_ms"]["p50"] is not None
        }
        presets = {
            name: preset(name, entries, state.catalog, keys=counts, ttft_ms=ttft)
            for name in PRESETS
        }
        return _json({"providers": providers, "presets": presets})

    # --- what happened ----------------------------------------------------------------------

    @quart.get("/api/quotas")
    async def quotas() -> Response:
        view = quotas_.quota_view(runtime.holder.state, now=runtime.clock())
        return _json(quotas_.to_data(view))

    @quart.get("/api/analytics")
    async def analytics() -> Response:
        window = request.args.get("window", "24h")
        try:
            report = await analytics_.analytics_report(store, window, now=runtime.clock())
        except ValueError as exc:
            return error_response(400, str(exc), param="window")
        return _json(report)

    @quart.get("/api/requests")
    async def requests() -> Response:
        raw = request.args.get("limit", "50")
        # ASCII digits only: str.isdigit() is true of "²", which int() refuses.
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_REQUESTS_LISTED:
            return error_response(
                400, f"`limit` must be a whole number from 1 to {MAX_REQUESTS_LISTED}.", "limit"
            )
        flag = request.args.get("failed", "false")
        if flag not in ("1", "true", "0", "false"):
            return error_response(400, "`failed` must be true, false, 1 or 0.", "failed")
        failed = flag in ("1", "true")
        limit = int(raw)
        rows = await (store.failed_requests(limit) if failed else store.recent_requests(limit))
        listed = []
        for row in rows:
            attempts = await store.attempts_of(row.id)
            listed.append(
                {
                    "id": row.id,
                    "at": row.at,
                    "model": row.model,
                    "routed_via": row.routed_via,
                    "status": row.status,
                    "latency_ms": row.latency_ms,
                    "prompt_tokens": row.prompt_tokens,
                    "completion_tokens": row.completion_tokens,
                    "stream": row.stream,
                    "error": row.error,
                    "attempts": [
                        {
                            "n": a.n,
                            "target": f"{a.provider}/{a.model}",
                            "status": a.status,
                            "outcome": a.error_class,
                            "latency_ms": a.latency_ms,
                        }
                        for a in attempts
                    ],
                }
            )
        return _json({"data": listed})


# --- helpers ----------------------------------------------------------------------------------


async def _body() -> bytes:
    data = await request.get_data()
    return data if isinstance(data, bytes) else data.encode()


def raw_headers() -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]


def _json(data: Any, *, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def error_response(
    status: int, message: str, param: str | None = None, *, code: str | None = None
) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = error_body(message, kind, param=param, code=code)
    return Response(body, status=status, content_type="application/json")


def _bad(body: BadBody) -> Response:
    return error_response(400, body.message, body.param)


def _refused(refused: Refused) -> Response:
    """A secret or label that cannot be stored: a 400 naming the field, never quoting it."""
    return error_response(400, refused.message, refused.field)


def _no_key(key_id: str) -> Response:
    return error_response(404, f"There is no key {key_id}.", code="not_found")


def _set_cookie(response: Response, login: Login) -> None:
    secure = request.scheme == "https"
    response.set_cookie(
        COOKIE,
        login.cookie,
        expires=login.expires,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )


def _masked(secret: str) -> str:
    return f"…{secret[-4:]}" if len(secret) >= 12 else "…"


def _key_data(runtime: Runtime, record: KeyRecord) -> dict[str, Any]:
    state = runtime.holder.state
    entry = state.health.of(record.provider, record.id)
    live = state.topology.key(record.provider, record.id)
    requests, tokens = quotas_.used_today(state, record.provider, record.id, now=runtime.clock())
    return {
        "id": record.id,
        "provider": record.provider,
        "label": record.label,
        "enabled": record.enabled,
        "routable": live is not None,
        "secret_tail": None if live is None else _masked(live.secret),
        "health": entry.state.value,
        "health_since": entry.since,
        "last_check": entry.checked_at,
        "last_error": entry.last_error,
        "created_at": record.created_at,
        "today": {"requests": requests, "tokens": tokens},
    }


def _model_data(provider: str, model: Any) -> dict[str, Any]:
    caps = model.caps
    return {
        "id": model.id,
        "target": f"{provider}/{model.id}",
        "caps": {
            "rpm": caps.rpm,
            "rpd": caps.rpd,
            "tpm": caps.tpm,
            "tpd": caps.tpd,
            "concurrency": caps.concurrency,
        },
        "account": model.account,
        "context": model.context,
        "max_output": model.max_output,
        "tools": model.tools,
        "vision": model.vision,
        "json": model.json,
        "reasoning": model.reasoning,
        "kind": model.kind.value,
        "dimensions": model.dimensions,
    }


STRATEGIES: Final = tuple(member.value for member in Strategy)


async def _strategy_data(runtime: Runtime) -> dict[str, Any]:
    """The strategy in use, where it comes from (the dashboard's choice, else the config's),
    and the choices."""
    stored = await runtime.store.get_setting(STRATEGY_SETTING)
    return {
        "strategy": runtime.holder.state.catalog.settings.strategy.value,
        "source": "dashboard" if stored in STRATEGIES else "config",
        "config": runtime.settings.catalog.settings.strategy.value,
        "choices": list(STRATEGIES),
    }


def _chain_name(raw: str | None) -> str | Response | None:
    """A ``?name=`` of the chain routes: ``None`` for ``auto``'s chain, or a 400."""
    if raw is None or raw in ("", AUTO):
        return None
    if not CHAIN_NAME.fullmatch(raw):
        return error_response(
            400, "A chain name is lower-case letters, digits, '-' and '_'.", param="name"
        )
    return raw


async def _chain_entries(
    runtime: Runtime, name: str | None = None
) -> tuple[list[tuple[str, bool]], str]:
    """The chain ``name`` (``None``: ``auto``'s) with its switched-off entries, and where it
    comes from: the store's if the user set one (``dashboard``), else the config's."""
    stored = await runtime.store.get_chain_entries(name)
    if stored is not None:
        return stored, "dashboard"
    configured = runtime.settings.catalog.settings
    entries = configured.chain if name is None else configured.chains.get(name, ())
    return [(entry, True) for entry in entries], "config"


async def _chain_data(runtime: Runtime, name: str | None = None) -> dict[str, Any]:
    state = runtime.holder.state
    view = quotas_.quota_view(state, now=runtime.clock())
    targets = {target.target: target for target in view.targets}
    chain, source = await _chain_entries(runtime, name)
    entries = []
    for entry, enabled in chain:
        target = targets.get(entry)
        entries.append(
            {
                "target": entry,
                "enabled": enabled,
                "keys": 0 if target is None else target.keys,
                "servable_now": False if target is None else target.servable_now,
                "retry_at": None if target is None else target.retry_at,
            }
        )
    settings = state.catalog.settings
    in_use = settings.chain if name is None else settings.chains.get(name, ())
    names = set(runtime.settings.catalog.settings.chains) | set(
        await runtime.store.get_named_chains()
    )
    return {
        "name": name or AUTO,
        "chains": [AUTO, *sorted(names)],
        "data": entries,
        "source": source,
        "in_use": list(in_use),
    }


def _check_soon(runtime: Runtime, record: KeyRecord) -> None:
    """Check a key just added or changed, in the background: the page shows its health when
    the check is done."""
    key: Key | None = runtime.holder.state.topology.key(record.provider, record.id)
    if key is None or runtime.tasks is None:
        return
    runtime.tasks.start_soon(
        lambda: check_key(runtime.holder, runtime.upstreams, key, clock=runtime.clock)
    )
