"""The catalog: which providers exist, how to reach them, and what each model's free tier allows.

The bundled ``data/catalog.toml`` and the user's config file have the same shape (DESIGN.md,
"Config file"), so one parser reads both: the bundled file is applied to an empty catalog, then the
user's file on top of it (``freellm.shell.config`` reads the files). Applying a config is a pure
function from ``(Catalog, mapping)`` to a new ``Catalog``; every bad value raises
:class:`ConfigError` naming the key path (``providers.groq.models[0].rpm``) and what is wrong.

Rules of an override, as DESIGN.md fixes them:

- a provider table overrides the fields it names (``base_url``, ``dialect``, ...), keeps the rest;
- a ``[[providers.X.models]]`` entry replaces the catalog's model with the same id whole, or adds
  it: a cap left out means "no known cap";
- a provider the catalog does not know is the user's own and must name its ``dialect`` and
  ``base_url``;
- ``[router]`` settings replace the defaults they name.
"""

from __future__ import annotations

import enum
import fnmatch
import math
import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar

import attrs

from freellm.core.keys import header_problem

__all__ = [
    "AUTO",
    "AUTO_PREFIX",
    "CHAIN_NAME",
    "EMBEDDINGS_CHAIN",
    "ROLLING",
    "AuthStyle",
    "Caps",
    "Catalog",
    "ConfigError",
    "DashboardSettings",
    "Dialect",
    "ModelKind",
    "ModelSpec",
    "PoolSettings",
    "ProviderSpec",
    "RouterSettings",
    "StoreSettings",
    "Strategy",
    "Target",
    "Timeouts",
    "apply_config",
    "load_config_text",
    "with_chain",
]

_E = TypeVar("_E", bound=enum.Enum)

AUTO: Final = "auto"
"""The model name that follows the fallback chain."""
AUTO_PREFIX: Final = "auto:"
"""``auto:NAME`` follows the named chain ``NAME`` (``[router.chains]``)."""
EMBEDDINGS_CHAIN: Final = "embeddings"
"""The named chain whose first model ``auto`` means for ``/v1/embeddings``."""

ROLLING: Final = "rolling"
"""``daily_reset`` value for a rolling 24 h window (any other value names an IANA time zone)."""


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range.

    ``path`` is the dotted key (``providers.groq.models[0].rpm``); ``str()`` of the error reads
    ``"<path>: <what is wrong>"``.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class Dialect(enum.Enum):
    OPENAI = "openai"
    GEMINI = "gemini"
    COHERE = "cohere"


class ModelKind(enum.Enum):
    """What a model does: a chat model answers chat completions (and every door translated onto
    them), an embedding model answers ``/v1/embeddings``. Routing never mixes the two."""

    CHAT = "chat"
    EMBEDDING = "embedding"


class AuthStyle(enum.Enum):
    BEARER = "bearer"
    GOOG_API_KEY = "x-goog-api-key"
    # The stored key is "account_id:api_token": the token goes in a Bearer header and the account
    # id into the base URL's "{account_id}".
    CLOUDFLARE = "cloudflare"


@attrs.frozen
class Caps:
    """Free-tier caps of one model (``None``: no known cap).

    Minute caps are rolling windows; day caps follow the provider's ``daily_reset``.
    ``concurrency`` caps requests in flight at once.
    """

    rpm: int | None = None
    rpd: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    concurrency: int | None = None

    @property
    def empty(self) -> bool:
        return (
            self.rpm is None
            and self.rpd is None
            and self.tpm is None
            and self.tpd is None
            and self.concurrency is None
        )


@attrs.frozen
class ModelSpec:
    """One model of one provider.

    ``account``: the caps count against the key across every ``account`` model of the provider
    (OpenRouter's free tier is per key, all ``:free`` models together). ``reasoning``: the model
    thinks on request (``reasoning_effort``; the adapters drop it for a model that cannot).

    An embedding model (``kind``) has a ``context`` that is its input limit per text,
    ``dimensions``, the size of its vectors, whether it gives shorter ones on request
    (``custom_dimensions``, Matryoshka-trained models), and ``max_batch``, how many texts one call
    may embed.
    """

    id: str
    caps: Caps = Caps()
    context: int | None = None
    max_output: int | None = None
    tools: bool = False
    vision: bool = False
    json: bool = False
    account: bool = False
    reasoning: bool = False
    kind: ModelKind = ModelKind.CHAT
    dimensions: int | None = None
    custom_dimensions: bool = False
    max_batch: int | None = None


def _read_only_strings(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


def _read_only_providers(mapping: Mapping[str, ProviderSpec]) -> Mapping[str, ProviderSpec]:
    return MappingProxyType(dict(mapping))


def _read_only_models(mapping: Mapping[str, ModelSpec]) -> Mapping[str, ModelSpec]:
    return MappingProxyType(dict(mapping))


@attrs.frozen
class ProviderSpec:
    id: str
    name: str
    base_url: str
    dialect: Dialect
    auth: AuthStyle = AuthStyle.BEARER
    daily_reset: str = ROLLING
    headers: Mapping[str, str] = attrs.field(
        default=MappingProxyType({}), converter=_read_only_strings
    )
    models: Mapping[str, ModelSpec] = attrs.field(
        default=MappingProxyType({}), converter=_read_only_models
    )


@attrs.frozen
class Target:
    """A model of a provider: what a chain entry or a model id resolves to."""

    provider: str
    model: ModelSpec

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model.id}"


def _read_only_chains(mapping: Mapping[str, tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(dict(mapping))


class Strategy(enum.Enum):
    """``[router] strategy``: how a plan orders the candidates that pass every filter."""

    CHAIN = "chain"  # the fallback chain's order; the keys of a model by headroom
    CAPACITY = "capacity"  # the least share of the tightest remaining budget (core.packing)


@attrs.frozen
class RouterSettings:
    """``[router]``. ``chain`` is the one ``auto`` follows; ``chains`` are the named ones
    (``auto:coding`` follows ``chains["coding"]``; ``chains["embeddings"]`` is where ``auto``
    looks for an embedding model). ``aliases`` map model names a client may send (glob patterns,
    first match wins) to what freellm routes them to: ``claude-*`` goes to ``auto`` unless the
    config says otherwise, since no free tier serves Claude."""

    chain: tuple[str, ...] = ()
    chains: Mapping[str, tuple[str, ...]] = attrs.field(
        default=MappingProxyType({}), converter=_read_only_chains
    )
    aliases: tuple[tuple[str, str], ...] = (("claude-*", "auto"),)
    max_attempts: int = 20
    sticky_ttl_s: float = 1800.0
    max_sessions: int = 10_000
    default_completion_tokens: int = 1024
    strategy: Strategy = Strategy.CHAIN


@attrs.frozen
class StoreSettings:
    """``[store]``: how long the request log keeps a request."""

    keep_days: int = 30


@attrs.frozen
class DashboardSettings:
    """``[dashboard]``: how long a login to the dashboard lasts."""

    session_hours: float = 168.0


@attrs.frozen
class Timeouts:
    """``[timeouts]``: the deadlines of one upstream call, in seconds."""

    connect: float = 10.0
    first_byte: float = 60.0  # from sending a stream's request to its first chunk for the client
    idle: float = 60.0  # between two reads of an answer
    total: float = 900.0  # the whole call, a stream to its end included
    drain: float = 1.0  # after a stream's [DONE], for its body to end (else its connection goes)
    pool: float = 1.0  # for a free connection to the provider, when its pool is at max_connections


@attrs.frozen
class PoolSettings:
    """``[pool]``: the keep-alive connections to each provider.

    ``max_connections`` caps the connections open to one provider at once; ``None`` (the
    default) leaves the cap to the open-files limit: a connection needs a file descriptor, and
    a cap below what the machine allows would only queue requests the provider might serve (an
    LLM stream holds its connection for tens of seconds, so any small cap is a ceiling on
    conversations). A request that finds the pool full waits ``[timeouts] pool_s``, then fails
    over like a connect error. How many requests a model takes at once is the router's business
    (the ``concurrency`` cap), not the pool's. ``max_idle`` is how many idle connections each
    provider keeps for reuse.
    """

    max_connections: int | None = None
    max_idle: int = 32


@attrs.frozen
class Catalog:
    """Providers in their catalog order, the router settings, and indexes derived from them.

    The indexes (``chain_targets``, ``by_model``) are built here, from ``providers`` and
    ``settings``, whenever a catalog is made (:func:`apply_config` or ``attrs.evolve``), so they
    never disagree with them. Raises :class:`ConfigError` for a chain entry that names no known
    provider/model, or names one twice.
    """

    providers: Mapping[str, ProviderSpec] = attrs.field(
        default=MappingProxyType({}), converter=_read_only_providers
    )
    settings: RouterSettings = RouterSettings()
    updated: str | None = None
    store: StoreSettings = StoreSettings()
    timeouts: Timeouts = Timeouts()
    dashboard: DashboardSettings = DashboardSettings()
    pool: PoolSettings = PoolSettings()
    chain_targets: tuple[Target, ...] = attrs.field(init=False, eq=False)
    chains: Mapping[str, tuple[Target, ...]] = attrs.field(init=False, eq=False)
    by_model: Mapping[str, tuple[Target, ...]] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        chain_targets = _chain_targets(self.providers, self.settings.chain, "router.chain")
        chains = {
            name: _chain_targets(self.providers, entries, f"router.chains.{name}")
            for name, entries in self.settings.chains.items()
        }
        by_model: dict[str, list[Target]] = {}
        for target in chain_targets:
            by_model.setdefault(target.model.id, []).append(target)
        for spec in self.providers.values():
            for model_spec in spec.models.values():
                target = Target(spec.id, model_spec)
                serving = by_model.setdefault(model_spec.id, [])
                if target not in serving:
                    serving.append(target)
        object.__setattr__(self, "chain_targets", chain_targets)
        object.__setattr__(self, "chains", MappingProxyType(chains))
        frozen = {model: tuple(targets) for model, targets in by_model.items()}
        object.__setattr__(self, "by_model", MappingProxyType(frozen))
        for pattern, name in self.settings.aliases:
            if not self._routable(name):
                raise ConfigError(
                    f"router.aliases.{pattern!r}",
                    f"{name!r} is not auto, a named chain (auto:NAME) or a known model",
                )

    def alias(self, name: str) -> str:
        """The model name a request's ``model`` routes as: the target of the first alias whose
        pattern matches it, else ``name`` itself."""
        for pattern, target in self.settings.aliases:
            if fnmatch.fnmatchcase(name, pattern):
                return target
        return name

    def _routable(self, name: str) -> bool:
        if name == AUTO:
            return True
        if name.startswith(AUTO_PREFIX):
            return name.removeprefix(AUTO_PREFIX) in self.chains
        return bool(self.resolve(name))

    def target(self, provider: str, model: str) -> Target | None:
        spec = self.providers.get(provider)
        if spec is None:
            return None
        model_spec = spec.models.get(model)
        return None if model_spec is None else Target(provider, model_spec)

    def resolve(self, name: str) -> tuple[Target, ...]:
        """The targets a request's ``model`` names, best first; empty if none.

        ``provider/model-id`` stays on that provider when the provider exists and serves the
        rest; otherwise the whole string is a model id (ids like ``openai/gpt-oss-120b`` contain
        slashes) served by every provider that has it, in chain order, then catalog order.
        ``auto`` is the router's business, not the catalog's.
        """
        provider, sep, rest = name.partition("/")
        if sep:
            target = self.target(provider, rest)
            if target is not None:
                return (target,)
        return self.by_model.get(name, ())


# --- parsing ------------------------------------------------------------------------------------

_PROVIDER_KEYS: Final = frozenset(
    {"name", "base_url", "dialect", "auth", "daily_reset", "headers", "models"}
)
_MODEL_CAPS: Final = ("rpm", "rpd", "tpm", "tpd", "concurrency")
_MODEL_FLAGS: Final = ("tools", "vision", "json", "account", "reasoning", "custom_dimensions")
_MODEL_KEYS: Final = frozenset(
    {"id", *_MODEL_CAPS, *_MODEL_FLAGS, "context", "max_output", "kind", "dimensions", "max_batch"}
)
_ROUTER_KEYS: Final = frozenset(
    {
        "chain",
        "chains",
        "aliases",
        "max_attempts",
        "sticky_ttl_s",
        "max_sessions",
        "default_completion_tokens",
        "strategy",
    }
)
_TOP_KEYS: Final = frozenset(
    {"providers", "router", "store", "timeouts", "dashboard", "pool", "updated", "source"}
)
_TIMEOUT_KEYS: Final = {"connect_s": "connect", "first_byte_s": "first_byte", "idle_s": "idle",
                        "total_s": "total", "drain_s": "drain", "pool_s": "pool"}  # fmt: skip
_PROVIDER_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
CHAIN_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""What a named chain may be called: it goes into a model name (``auto:NAME``)."""


def load_config_text(text: str, *, origin: str = "config") -> Mapping[str, Any]:
    """Parse TOML text into a mapping. Raises :class:`ConfigError` for invalid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(origin, f"not valid TOML ({exc})") from None


def apply_config(catalog: Catalog, config: Mapping[str, Any]) -> Catalog:
    """A new catalog: ``catalog`` with ``config`` (a parsed TOML mapping) applied on top.

    Raises :class:`ConfigError` naming the first bad key.
    """
    _check_table(config, "", _TOP_KEYS)
    providers = dict(catalog.providers)
    for provider_id, table in _table(config, "providers").items():
        path = f"providers.{provider_id}"
        if not _PROVIDER_ID.fullmatch(provider_id):
            raise ConfigError(path, "a provider id is lower-case letters, digits, '-' and '_'")
        if not isinstance(table, Mapping):
            raise ConfigError(path, "must be a table")
        providers[provider_id] = _apply_provider(providers.get(provider_id), provider_id, table)

    settings = _apply_router(catalog.settings, _table(config, "router"))
    updated = config.get("updated", catalog.updated)
    return Catalog(
        providers,
        settings,
        None if updated is None else str(updated),
        _apply_store(catalog.store, _table(config, "store")),
        _apply_timeouts(catalog.timeouts, _table(config, "timeouts")),
        _apply_dashboard(catalog.dashboard, _table(config, "dashboard")),
        _apply_pool(catalog.pool, _table(config, "pool")),
    )


def with_chain(catalog: Catalog, chain: Sequence[str], name: str | None = None) -> Catalog:
    """``catalog`` with the chain ``name`` (``None``: the one ``auto`` follows) set to
    ``chain`` (``provider/model`` entries); an empty one keeps the catalog's own. Raises
    :class:`ConfigError` for an entry that names no known provider/model, or names one twice."""
    if not chain:
        return catalog
    if name is None:
        return apply_config(catalog, {"router": {"chain": list(chain)}})
    return apply_config(catalog, {"router": {"chains": {name: list(chain)}}})


def _chain_targets(
    providers: Mapping[str, ProviderSpec], chain: tuple[str, ...], path: str
) -> tuple[Target, ...]:
    targets = []
    seen: set[str] = set()
    for index, entry in enumerate(chain):
        provider, sep, model = entry.partition("/")
        spec = providers.get(provider)
        if not sep or spec is None or model not in spec.models:
            raise ConfigError(f"{path}[{index}]", f"{entry!r} is not a known provider/model")
        if entry in seen:
            raise ConfigError(f"{path}[{index}]", f"{entry!r} is listed twice")
        seen.add(entry)
        targets.append(Target(provider, spec.models[model]))
    return tuple(targets)


def _apply_provider(
    base: ProviderSpec | None, provider_id: str, table: Mapping[str, Any]
) -> ProviderSpec:
    path = f"providers.{provider_id}"
    _check_table(table, path, _PROVIDER_KEYS)
    if base is None:
        for required in ("dialect", "base_url"):
            if required not in table:
                raise ConfigError(
                    f"{path}.{required}",
                    "required for a provider that is not in the catalog",
                )
        base = ProviderSpec(id=provider_id, name=provider_id, base_url="", dialect=Dialect.OPENAI)

    changes: dict[str, Any] = {}
    if "name" in table:
        changes["name"] = _string(table, path, "name")
    if "base_url" in table:
        url = _string(table, path, "base_url")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{path}.base_url", f"must start with http:// or https://, got {url!r}"
            )
        changes["base_url"] = url.rstrip("/")
    if "dialect" in table:
        changes["dialect"] = _enum(Dialect, table, path, "dialect")
    if "auth" in table:
        changes["auth"] = _enum(AuthStyle, table, path, "auth")
    if "daily_reset" in table:
        changes["daily_reset"] = _daily_reset(table, path)
    if "headers" in table:
        headers = table["headers"]
        if not isinstance(headers, Mapping) or not all(
            isinstance(v, str) for v in headers.values()
        ):
            raise ConfigError(f"{path}.headers", "must be a table of strings")
        for name, value in headers.items():
            problem = header_problem(name, value)  # a value may be a key: never quoted
            if problem is not None:
                raise ConfigError(f"{path}.headers.{name!r}", problem)
        changes["headers"] = headers
    if "models" in table:
        entries = table["models"]
        if not isinstance(entries, list):
            raise ConfigError(f"{path}.models", "must be an array of tables ([[...models]])")
        models = dict(base.models)
        for index, entry in enumerate(entries):
            spec = _model(entry, f"{path}.models[{index}]")
            models.pop(spec.id, None)  # a replaced model moves to the end, as written
            models[spec.id] = spec
        changes["models"] = models
    return attrs.evolve(base, **changes)


def _model(entry: object, path: str) -> ModelSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(path, "must be a table")
    _check_table(entry, path, _MODEL_KEYS)
    if "id" not in entry:
        raise ConfigError(f"{path}.id", "required")
    model_id = _string(entry, path, "id")
    caps = Caps(**{name: _count(entry, path, name) for name in _MODEL_CAPS if name in entry})

    def size(name: str, minimum: int = 0) -> int | None:
        return _count(entry, path, name, minimum=minimum) if name in entry else None

    return ModelSpec(
        id=model_id,
        caps=caps,
        context=size("context"),
        max_output=size("max_output"),
        tools=_flag(entry, path, "tools"),
        vision=_flag(entry, path, "vision"),
        json=_flag(entry, path, "json"),
        account=_flag(entry, path, "account"),
        reasoning=_flag(entry, path, "reasoning"),
        kind=_enum(ModelKind, entry, path, "kind") if "kind" in entry else ModelKind.CHAT,
        dimensions=size("dimensions", 1),
        custom_dimensions=_flag(entry, path, "custom_dimensions"),
        max_batch=size("max_batch", 1),
    )


def _apply_router(base: RouterSettings, table: Mapping[str, Any]) -> RouterSettings:
    path = "router"
    _check_table(table, path, _ROUTER_KEYS)
    changes: dict[str, Any] = {}
    if "chain" in table:
        changes["chain"] = _chain_entries(table["chain"], f"{path}.chain")
    if "chains" in table:
        chains = dict(base.chains)
        for name, entries in _table(table, "chains", path).items():
            where = f"{path}.chains.{name}"
            if name == AUTO:
                raise ConfigError(where, "auto's chain is router.chain")
            if not CHAIN_NAME.fullmatch(name):
                raise ConfigError(
                    where, "a chain name is lower-case letters, digits, '-' and '_' (64 at most)"
                )
            chains[name] = _chain_entries(entries, where)
        changes["chains"] = chains
    if "aliases" in table:
        aliases: dict[str, str] = {}
        for pattern, name in _table(table, "aliases", path).items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{path}.aliases.{pattern!r}", "must be a model name")
            aliases[pattern] = name
        kept = [(p, n) for p, n in base.aliases if p not in aliases]
        changes["aliases"] = (*aliases.items(), *kept)
    for name in ("max_attempts", "max_sessions", "default_completion_tokens"):
        if name in table:
            changes[name] = _count(table, path, name, minimum=1)
    if "sticky_ttl_s" in table:
        ttl = table["sticky_ttl_s"]
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl < math.inf:
            raise ConfigError(f"{path}.sticky_ttl_s", f"must be a finite number >= 0, got {ttl!r}")
        changes["sticky_ttl_s"] = float(ttl)
    if "strategy" in table:
        changes["strategy"] = _enum(Strategy, table, path, "strategy")
    return attrs.evolve(base, **changes)


def _chain_entries(chain: object, path: str) -> tuple[str, ...]:
    if not isinstance(chain, list) or not all(isinstance(e, str) for e in chain):
        raise ConfigError(path, 'must be an array of "provider/model" strings')
    return tuple(chain)


def _apply_store(base: StoreSettings, table: Mapping[str, Any]) -> StoreSettings:
    _check_table(table, "store", frozenset({"keep_days"}))
    if "keep_days" in table:
        return StoreSettings(keep_days=_count(table, "store", "keep_days", minimum=1))
    return base


def _apply_dashboard(base: DashboardSettings, table: Mapping[str, Any]) -> DashboardSettings:
    _check_table(table, "dashboard", frozenset({"session_hours"}))
    if "session_hours" not in table:
        return base
    hours = table["session_hours"]
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours < math.inf:
        raise ConfigError("dashboard.session_hours", f"must be a finite number > 0, got {hours!r}")
    return DashboardSettings(session_hours=float(hours))


def _apply_pool(base: PoolSettings, table: Mapping[str, Any]) -> PoolSettings:
    _check_table(table, "pool", frozenset({"max_connections", "max_idle"}))
    changes: dict[str, int] = {}
    if "max_connections" in table:
        changes["max_connections"] = _count(table, "pool", "max_connections", minimum=1)
    if "max_idle" in table:
        changes["max_idle"] = _count(table, "pool", "max_idle", minimum=0)
    return attrs.evolve(base, **changes)


def _apply_timeouts(base: Timeouts, table: Mapping[str, Any]) -> Timeouts:
    _check_table(table, "timeouts", frozenset(_TIMEOUT_KEYS))
    changes: dict[str, float] = {}
    for key, field in _TIMEOUT_KEYS.items():
        if key in table:
            value = table[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < math.inf
            ):
                raise ConfigError(f"timeouts.{key}", f"must be a finite number > 0, got {value!r}")
            changes[field] = float(value)
    return attrs.evolve(base, **changes)


# --- field checks -------------------------------------------------------------------------------


def _table(config: Mapping[str, Any], key: str, path: str = "") -> Mapping[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}.{key}" if path else key, "must be a table")
    return value


def _check_table(table: Mapping[str, Any], path: str, known: frozenset[str]) -> None:
    for key in table:
        if key not in known:
            where = f"{path}.{key}" if path else key
            raise ConfigError(where, f"unknown key (known: {', '.join(sorted(known))})")


def _string(table: Mapping[str, Any], path: str, key: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}.{key}", f"must be a non-empty string, got {value!r}")
    return value


def _count(table: Mapping[str, Any], path: str, key: str, *, minimum: int = 0) -> int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{path}.{key}", f"must be an integer >= {minimum}, got {value!r}")
    return value


def _flag(table: Mapping[str, Any], path: str, key: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}.{key}", f"must be true or false, got {value!r}")
    return value


def _enum(kind: type[_E], table: Mapping[str, Any], path: str, key: str) -> _E:
    value = table[key]
    try:
        return kind(value)
    except ValueError:
        choices = " | ".join(str(member.value) for member in kind)
        raise ConfigError(f"{path}.{key}", f"must be one of {choices}, got {value!r}") from None


def _daily_reset(table: Mapping[str, Any], path: str) -> str:
    value = _string(table, path, "daily_reset")
    if value == ROLLING:
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{path}.daily_reset", f'must be "rolling" or an IANA time zone, got {value!r}'
        ) from None
    return value
