"""The bundled catalog against providers.md, the config parser, and ``Catalog.resolve``."""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freellm.core.catalog import (
    ROLLING,
    AuthStyle,
    Caps,
    Catalog,
    ConfigError,
    Dialect,
    ModelSpec,
    PoolSettings,
    ProviderSpec,
    Strategy,
    Target,
    apply_config,
    load_config_text,
)
from freellm.shell.config import bundled_catalog, load_catalog


@functools.cache
def bundled() -> Catalog:
    return bundled_catalog()


def configured(text: str) -> Catalog:
    return apply_config(bundled(), load_config_text(text))


# --- the bundled catalog against providers.md ---------------------------------------------------

# providers.md, "Endpoints and dialects": (base URL, dialect, auth). Cohere's native endpoint is
# "https://api.cohere.com/v2/chat"; the catalog keeps the API root and the dialect appends the path.
ENDPOINTS: dict[str, tuple[str, Dialect, AuthStyle]] = {
    "google": (
        "https://generativelanguage.googleapis.com/v1beta",
        Dialect.GEMINI,
        AuthStyle.GOOG_API_KEY,
    ),
    "groq": ("https://api.groq.com/openai/v1", Dialect.OPENAI, AuthStyle.BEARER),
    "cerebras": ("https://api.cerebras.ai/v1", Dialect.OPENAI, AuthStyle.BEARER),
    "sambanova": ("https://api.sambanova.ai/v1", Dialect.OPENAI, AuthStyle.BEARER),
    "nvidia": ("https://integrate.api.nvidia.com/v1", Dialect.OPENAI, AuthStyle.BEARER),
    "mistral": ("https://api.mistral.ai/v1", Dialect.OPENAI, AuthStyle.BEARER),
    "openrouter": ("https://openrouter.ai/api/v1", Dialect.OPENAI, AuthStyle.BEARER),
    "github": ("https://models.github.ai/inference", Dialect.OPENAI, AuthStyle.BEARER),
    "huggingface": ("https://router.huggingface.co/v1", Dialect.OPENAI, AuthStyle.BEARER),
    "cohere": ("https://api.cohere.com", Dialect.COHERE, AuthStyle.BEARER),
    "cloudflare": (
        "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
        Dialect.OPENAI,
        AuthStyle.CLOUDFLARE,
    ),
    "zhipu": ("https://open.bigmodel.cn/api/paas/v4", Dialect.OPENAI, AuthStyle.BEARER),
    "moonshot": ("https://api.moonshot.ai/v1", Dialect.OPENAI, AuthStyle.BEARER),
    "minimax": ("https://api.minimax.io/v1", Dialect.OPENAI, AuthStyle.BEARER),
}


def test_bundled_catalog_has_exactly_the_fourteen_providers_of_providers_md() -> None:
    assert set(bundled().providers) == set(ENDPOINTS)
    assert len(ENDPOINTS) == 14


@pytest.mark.parametrize("provider", sorted(ENDPOINTS))
def test_bundled_provider_has_the_endpoint_dialect_and_auth_of_providers_md(
    provider: str,
) -> None:
    spec = bundled().providers[provider]
    assert (spec.base_url, spec.dialect, spec.auth) == ENDPOINTS[provider]
    assert spec.id == provider
    assert spec.models, "every provider serves at least one model"


def test_cohere_native_chat_endpoint_is_its_base_url_plus_v2_chat() -> None:
    assert f"{bundled().providers['cohere'].base_url}/v2/chat" == "https://api.cohere.com/v2/chat"


def test_openrouter_sends_its_referer_and_title_headers() -> None:
    headers = bundled().providers["openrouter"].headers
    assert set(headers) == {"HTTP-Referer", "X-Title"}


def test_only_google_resets_its_day_on_a_calendar() -> None:
    resets = {pid: spec.daily_reset for pid, spec in bundled().providers.items()}
    assert resets.pop("google") == "America/Los_Angeles"
    assert set(resets.values()) == {ROLLING}


# providers.md, "Free-tier caps": where it gives a range the catalog takes the conservative end.
CAPS: list[tuple[str, str, Caps, int | None]] = [
    ("google", "gemini-2.5-flash", Caps(rpm=10, rpd=20, tpm=250_000), 1_048_576),
    ("google", "gemini-2.5-flash-lite", Caps(rpm=15, rpd=1000, tpm=250_000), 1_048_576),
    ("google", "gemini-2.5-pro", Caps(rpm=5, rpd=100, tpm=250_000), 1_048_576),
    (
        "groq",
        "llama-3.3-70b-versatile",
        Caps(rpm=30, rpd=1000, tpm=12_000, tpd=100_000),
        131_072,
    ),
    (
        "groq",
        "llama-3.1-8b-instant",
        Caps(rpm=30, rpd=14_400, tpm=6000, tpd=500_000),
        131_072,
    ),
    (
        "groq",
        "meta-llama/llama-4-scout-17b-16e-instruct",
        Caps(rpm=30, rpd=1000, tpm=30_000, tpd=500_000),
        131_072,
    ),
    ("groq", "openai/gpt-oss-120b", Caps(rpm=30, rpd=1000, tpm=8000, tpd=200_000), 131_072),
    ("groq", "openai/gpt-oss-20b", Caps(rpm=30, rpd=1000, tpm=8000, tpd=200_000), 131_072),
    ("groq", "qwen/qwen3-32b", Caps(rpm=60, rpd=1000, tpm=6000, tpd=500_000), 131_072),
    (
        "cerebras",
        "qwen-3-235b-a22b-instruct-2507",
        Caps(rpm=30, rpd=14_400, tpm=60_000, tpd=1_000_000),
        65_536,
    ),
    ("sambanova", "Meta-Llama-3.3-70B-Instruct", Caps(rpm=20, rpd=20, tpd=200_000), 8192),
    ("nvidia", "meta/llama-3.3-70b-instruct", Caps(rpm=40), 128_000),
    ("mistral", "mistral-large-latest", Caps(rpm=2, tpm=500_000), 128_000),
    ("mistral", "mistral-small-latest", Caps(rpm=2, tpm=500_000), 128_000),
    ("mistral", "codestral-latest", Caps(rpm=2, tpm=500_000), 128_000),
    ("github", "openai/gpt-4.1", Caps(rpm=10, rpd=50), 8000),
    ("github", "openai/gpt-4o", Caps(rpm=10, rpd=50), 8000),
    ("cohere", "command-a-03-2025", Caps(rpm=20, rpd=33), 128_000),
    ("cohere", "command-r-plus-08-2024", Caps(rpm=20, rpd=33), 128_000),
    ("cloudflare", "@cf/meta/llama-3.3-70b-instruct-fp8-fast", Caps(), 24_000),
    ("zhipu", "glm-4.5-flash", Caps(), 128_000),
    ("moonshot", "kimi-latest", Caps(rpm=60, tpd=1_500_000, concurrency=3), 200_000),
    ("minimax", "MiniMax-M1", Caps(rpm=20, tpm=1_000_000), 200_000),
]


@pytest.mark.parametrize(
    ("provider", "model", "caps", "context"), CAPS, ids=[f"{p}/{m}" for p, m, _, _ in CAPS]
)
def test_bundled_model_has_the_caps_and_context_of_providers_md(
    provider: str, model: str, caps: Caps, context: int | None
) -> None:
    spec = bundled().providers[provider].models[model]
    assert spec.caps == caps
    assert spec.context == context


def test_gemini_2_5_flash_day_cap_lies_in_the_range_providers_md_gives() -> None:
    rpd = bundled().providers["google"].models["gemini-2.5-flash"].caps.rpd
    assert rpd is not None
    assert 20 <= rpd <= 250


def test_github_models_cap_output_at_4000_tokens() -> None:
    for model in ("openai/gpt-4.1", "openai/gpt-4o"):
        assert bundled().providers["github"].models[model].max_output == 4000


def test_openrouter_free_models_share_per_key_caps_of_20_rpm_and_50_rpd() -> None:
    models = bundled().providers["openrouter"].models
    assert models
    for spec in models.values():
        assert spec.id.endswith(":free")
        assert spec.account is True
        assert (spec.caps.rpm, spec.caps.rpd) == (20, 50)


@pytest.mark.parametrize("provider", ["mistral", "nvidia", "openrouter"])
def test_account_wide_providers_mark_every_model_account(provider: str) -> None:
    assert all(spec.account for spec in bundled().providers[provider].models.values())


@pytest.mark.parametrize("provider", ["groq", "cerebras", "google", "github", "cohere"])
def test_per_model_providers_mark_no_model_account(provider: str) -> None:
    assert not any(spec.account for spec in bundled().providers[provider].models.values())


def test_every_bundled_chain_entry_resolves_to_its_own_target() -> None:
    catalog = bundled()
    assert catalog.settings.chain
    assert [t.name for t in catalog.chain_targets] == list(catalog.settings.chain)
    for entry in catalog.settings.chain:
        (target,) = catalog.resolve(entry)
        assert target.name == entry


def test_bundled_chain_lists_every_chat_model_exactly_once() -> None:
    catalog = bundled()
    every_model = [
        f"{pid}/{model}"
        for pid, spec in catalog.providers.items()
        for model, model_spec in spec.models.items()
        if model_spec.kind.value == "chat"  # embedding models are the embeddings chain's
    ]
    assert Counter(catalog.settings.chain) == Counter(every_model)


def test_bundled_catalog_says_when_it_was_updated() -> None:
    updated = bundled().updated
    assert updated is not None
    assert dt.date.fromisoformat(updated).year >= 2026


def test_bundled_provider_ids_match_their_keys_and_model_ids_match_theirs() -> None:
    for pid, spec in bundled().providers.items():
        assert spec.id == pid
        for model_id, model in spec.models.items():
            assert model.id == model_id


# --- the config file ---------------------------------------------------------------------------

DESIGN_EXAMPLE = """
[providers.groq]                       # any catalog provider can be overridden
base_url = "http://127.0.0.1:9101/openai/v1"

[[providers.groq.models]]              # replaces or adds the catalog entry with this id
id = "llama-3.3-70b-versatile"
rpm = 30
rpd = 1000
tpm = 12000
tpd = 100000
context = 131072
tools = true

[providers.mylocal]                    # a provider of the user's own
dialect = "openai"                     # openai | gemini | cohere
base_url = "http://127.0.0.1:11434/v1"

[router]
chain = ["groq/llama-3.3-70b-versatile", "google/gemini-2.5-flash"]
max_attempts = 20
sticky_ttl_s = 1800
"""


def test_design_example_overrides_groq_base_url_and_keeps_its_other_fields() -> None:
    before = bundled().providers["groq"]
    after = configured(DESIGN_EXAMPLE).providers["groq"]
    assert after.base_url == "http://127.0.0.1:9101/openai/v1"
    assert (after.name, after.dialect, after.auth, after.daily_reset, after.headers) == (
        before.name,
        before.dialect,
        before.auth,
        before.daily_reset,
        before.headers,
    )


def test_design_example_replaces_the_model_whole_leaving_out_caps_and_flags_unset() -> None:
    groq = configured(DESIGN_EXAMPLE).providers["groq"]
    assert groq.models["llama-3.3-70b-versatile"] == ModelSpec(
        id="llama-3.3-70b-versatile",
        caps=Caps(rpm=30, rpd=1000, tpm=12_000, tpd=100_000, concurrency=None),
        context=131_072,
        max_output=None,  # the bundled entry has 32768: replaced whole, not merged
        tools=True,
        vision=False,
        json=False,  # the bundled entry has json = true
        account=False,
    )


def test_design_example_keeps_groq_models_it_does_not_name() -> None:
    before = bundled().providers["groq"].models
    after = configured(DESIGN_EXAMPLE).providers["groq"].models
    assert set(after) == set(before)
    for model_id in set(before) - {"llama-3.3-70b-versatile"}:
        assert after[model_id] == before[model_id]


def test_design_example_adds_a_provider_of_the_users_own() -> None:
    assert configured(DESIGN_EXAMPLE).providers["mylocal"] == ProviderSpec(
        id="mylocal",
        name="mylocal",
        base_url="http://127.0.0.1:11434/v1",
        dialect=Dialect.OPENAI,
        auth=AuthStyle.BEARER,
        daily_reset=ROLLING,
    )


def test_design_example_sets_the_router_chain_and_its_targets() -> None:
    catalog = configured(DESIGN_EXAMPLE)
    assert catalog.settings.chain == ("groq/llama-3.3-70b-versatile", "google/gemini-2.5-flash")
    assert catalog.chain_targets == (
        Target("groq", catalog.providers["groq"].models["llama-3.3-70b-versatile"]),
        Target("google", bundled().providers["google"].models["gemini-2.5-flash"]),
    )
    assert (catalog.settings.max_attempts, catalog.settings.sticky_ttl_s) == (20, 1800.0)


def test_router_settings_replace_the_defaults_they_name_and_keep_the_rest() -> None:
    settings_ = configured("[router]\nmax_attempts = 7\nsticky_ttl_s = 90.5\n").settings
    defaults = bundled().settings
    assert (settings_.max_attempts, settings_.sticky_ttl_s) == (7, 90.5)
    assert settings_.chain == defaults.chain
    assert settings_.max_sessions == defaults.max_sessions
    assert settings_.default_completion_tokens == defaults.default_completion_tokens


def test_the_routing_strategy_is_chain_unless_the_config_says_capacity() -> None:
    assert bundled().settings.strategy is Strategy.CHAIN
    assert configured('[router]\nstrategy = "capacity"\n').settings.strategy is Strategy.CAPACITY
    assert configured('[router]\nstrategy = "chain"\n').settings.strategy is Strategy.CHAIN


def test_the_pool_leaves_its_cap_to_the_open_files_limit_unless_told() -> None:
    assert bundled().pool == PoolSettings(max_connections=None, max_idle=32)
    assert bundled().timeouts.pool == 1.0
    catalog = configured("[pool]\nmax_connections = 500\n[timeouts]\npool_s = 0.25\n")
    assert catalog.pool == PoolSettings(max_connections=500, max_idle=32)
    assert catalog.timeouts.pool == 0.25
    assert catalog.timeouts.connect == bundled().timeouts.connect


def test_a_model_added_to_a_catalog_provider_joins_its_models_and_resolves() -> None:
    catalog = configured('[[providers.groq.models]]\nid = "brand-new"\nrpm = 5\n')
    groq = catalog.providers["groq"]
    assert set(groq.models) == {*bundled().providers["groq"].models, "brand-new"}
    assert groq.models["brand-new"] == ModelSpec(id="brand-new", caps=Caps(rpm=5))
    assert catalog.resolve("brand-new") == (Target("groq", groq.models["brand-new"]),)
    assert catalog.resolve("groq/brand-new") == (Target("groq", groq.models["brand-new"]),)


def test_base_url_override_drops_a_trailing_slash() -> None:
    catalog = configured('[providers.groq]\nbase_url = "http://127.0.0.1:9101/v1/"\n')
    assert catalog.providers["groq"].base_url == "http://127.0.0.1:9101/v1"


def test_an_empty_config_changes_nothing() -> None:
    assert configured("") == bundled()


_MODEL = '[[providers.groq.models]]\nid = "m"\n'
_PROVIDER = "[providers.groq]\n"
_CUSTOM = "[providers.mylocal]\n"
_CHAIN_OK = '"groq/llama-3.3-70b-versatile"'

BAD_CONFIGS: list[tuple[str, str, str, str]] = [
    # (case id, config text, the exact key path, what the message says)
    ("unknown top-level key", "colour = 1\n", "colour", "unknown key"),
    ("unknown provider key", _PROVIDER + "colour = 1\n", "providers.groq.colour", "unknown key"),
    (
        "unknown model key",
        _MODEL + "colour = 1\n",
        "providers.groq.models[0].colour",
        "unknown key",
    ),
    ("unknown router key", "[router]\ncolour = 1\n", "router.colour", "unknown key"),
    (
        "unknown key in the second model",
        _MODEL + '[[providers.groq.models]]\nid = "n"\nrmp = 3\n',
        "providers.groq.models[1].rmp",
        "unknown key",
    ),
    ("providers not a table", "providers = 3\n", "providers", "must be a table"),
    ("provider not a table", "[providers]\ngroq = 3\n", "providers.groq", "must be a table"),
    ("router not a table", "router = 3\n", "router", "must be a table"),
    ("negative rpm", _MODEL + "rpm = -1\n", "providers.groq.models[0].rpm", ">= 0, got -1"),
    ("text rpm", _MODEL + 'rpm = "abc"\n', "providers.groq.models[0].rpm", "got 'abc'"),
    ("boolean rpm", _MODEL + "rpm = true\n", "providers.groq.models[0].rpm", "got True"),
    ("float tpd", _MODEL + "tpd = 1.5\n", "providers.groq.models[0].tpd", "integer"),
    (
        "negative concurrency",
        _MODEL + "concurrency = -3\n",
        "providers.groq.models[0].concurrency",
        ">= 0",
    ),
    ("text context", _MODEL + 'context = "big"\n', "providers.groq.models[0].context", "integer"),
    (
        "text tools flag",
        _MODEL + 'tools = "yes"\n',
        "providers.groq.models[0].tools",
        "must be true or false, got 'yes'",
    ),
    (
        "integer account flag",
        _MODEL + "account = 1\n",
        "providers.groq.models[0].account",
        "true or false",
    ),
    (
        "model not a table",
        _PROVIDER + "models = [1]\n",
        "providers.groq.models[0]",
        "must be a table",
    ),
    (
        "model without id",
        "[[providers.groq.models]]\nrpm = 3\n",
        "providers.groq.models[0].id",
        "required",
    ),
    (
        "empty model id",
        '[[providers.groq.models]]\nid = ""\n',
        "providers.groq.models[0].id",
        "non-empty string",
    ),
    (
        "models a string",
        _PROVIDER + 'models = "llama"\n',
        "providers.groq.models",
        "must be an array",
    ),
    (
        "models a table",
        _PROVIDER + 'models = { id = "x" }\n',
        "providers.groq.models",
        "must be an array",
    ),
    (
        "unknown dialect",
        _PROVIDER + 'dialect = "soap"\n',
        "providers.groq.dialect",
        "must be one of openai | gemini | cohere, got 'soap'",
    ),
    (
        "unknown auth",
        _PROVIDER + 'auth = "basic"\n',
        "providers.groq.auth",
        "must be one of bearer | x-goog-api-key | cloudflare, got 'basic'",
    ),
    ("auth not a string", _PROVIDER + "auth = 3\n", "providers.groq.auth", "must be one of"),
    (
        "unknown time zone",
        '[providers.google]\ndaily_reset = "Mars/Olympus"\n',
        "providers.google.daily_reset",
        "must be \"rolling\" or an IANA time zone, got 'Mars/Olympus'",
    ),
    (
        "time zone path",
        '[providers.google]\ndaily_reset = "../../etc/passwd"\n',
        "providers.google.daily_reset",
        "IANA time zone",
    ),
    (
        "base_url without scheme",
        _PROVIDER + 'base_url = "api.groq.com/openai/v1"\n',
        "providers.groq.base_url",
        "must start with http:// or https://",
    ),
    (
        "base_url of another scheme",
        _PROVIDER + 'base_url = "ftp://api.groq.com"\n',
        "providers.groq.base_url",
        "must start with http:// or https://",
    ),
    ("empty name", _PROVIDER + 'name = ""\n', "providers.groq.name", "non-empty string"),
    (
        "headers not strings",
        _PROVIDER + "headers = { X-Title = 1 }\n",
        "providers.groq.headers",
        "must be a table of strings",
    ),
    (
        "custom provider without dialect",
        _CUSTOM + 'base_url = "http://127.0.0.1:11434/v1"\n',
        "providers.mylocal.dialect",
        "required for a provider that is not in the catalog",
    ),
    (
        "custom provider without base_url",
        _CUSTOM + 'dialect = "openai"\n',
        "providers.mylocal.base_url",
        "required for a provider that is not in the catalog",
    ),
    (
        "unknown chain entry",
        f'[router]\nchain = [{_CHAIN_OK}, "groq/no-such-model"]\n',
        "router.chain[1]",
        "'groq/no-such-model' is not a known provider/model",
    ),
    (
        "chain entry of an unknown provider",
        '[router]\nchain = ["nobody/llama"]\n',
        "router.chain[0]",
        "not a known provider/model",
    ),
    (
        "chain entry without a provider",
        f'[router]\nchain = [{_CHAIN_OK}, "gemini-2.5-flash"]\n',
        "router.chain[1]",
        "not a known provider/model",
    ),
    (
        "chain entry listed twice",
        f"[router]\nchain = [{_CHAIN_OK}, {_CHAIN_OK}]\n",
        "router.chain[1]",
        "listed twice",
    ),
    (
        "sticky_ttl_s not a number",
        "[router]\nsticky_ttl_s = nan\n",
        "router.sticky_ttl_s",
        "finite number",
    ),
    (
        "provider id with a slash",
        '[providers."a/b"]\ndialect = "openai"\nbase_url = "http://127.0.0.1:1"\n',
        "providers.a/b",
        "provider id",
    ),
    ("chain a string", f"[router]\nchain = {_CHAIN_OK}\n", "router.chain", "must be an array"),
    ("chain of numbers", "[router]\nchain = [1, 2]\n", "router.chain", "must be an array"),
    ("max_attempts 0", "[router]\nmax_attempts = 0\n", "router.max_attempts", ">= 1, got 0"),
    ("max_sessions 0", "[router]\nmax_sessions = 0\n", "router.max_sessions", ">= 1, got 0"),
    (
        "negative sticky_ttl_s",
        "[router]\nsticky_ttl_s = -1\n",
        "router.sticky_ttl_s",
        "must be a finite number >= 0, got -1",
    ),
    (
        "text sticky_ttl_s",
        '[router]\nsticky_ttl_s = "1h"\n',
        "router.sticky_ttl_s",
        "must be a finite number >= 0",
    ),
    ("boolean sticky_ttl_s", "[router]\nsticky_ttl_s = true\n", "router.sticky_ttl_s", "number"),
    (
        "unknown strategy",
        '[router]\nstrategy = "cheapest"\n',
        "router.strategy",
        "must be one of chain | capacity, got 'cheapest'",
    ),
    ("strategy not a string", "[router]\nstrategy = 1\n", "router.strategy", "must be one of"),
    ("pool of no connection", "[pool]\nmax_connections = 0\n", "pool.max_connections", ">= 1"),
    ("pool idle negative", "[pool]\nmax_idle = -1\n", "pool.max_idle", ">= 0"),
    ("pool unknown key", "[pool]\nmax_conns = 9\n", "pool.max_conns", "unknown"),
    ("pool wait zero", "[timeouts]\npool_s = 0\n", "timeouts.pool_s", "> 0"),
]


@pytest.mark.parametrize(
    ("text", "path", "problem"),
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_bad_config_raises_config_error_naming_the_key_and_the_problem(
    text: str, path: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        configured(text)
    assert caught.value.path == path
    assert problem in caught.value.problem
    assert str(caught.value) == f"{path}: {caught.value.problem}"


@pytest.mark.parametrize("text", ["[providers", "rpm = ", "a = 1\na = 2\n", 'x = "unclosed'])
def test_invalid_toml_raises_config_error_naming_its_origin(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, origin="my.toml")
    assert caught.value.path == "my.toml"
    assert "not valid TOML" in caught.value.problem


def test_a_bad_config_leaves_the_catalog_it_was_applied_to_unchanged() -> None:
    catalog = bundled()
    with pytest.raises(ConfigError):
        configured(_PROVIDER + 'base_url = "http://x"\n' + _MODEL.replace("groq", "nope"))
    assert catalog.providers["groq"].base_url == "https://api.groq.com/openai/v1"


# --- Catalog.resolve ---------------------------------------------------------------------------


def test_resolve_provider_slash_model_stays_on_that_provider() -> None:
    catalog = bundled()
    assert catalog.resolve("groq/llama-3.3-70b-versatile") == (
        Target("groq", catalog.providers["groq"].models["llama-3.3-70b-versatile"]),
    )


@pytest.mark.parametrize(
    ("name", "provider"),
    [
        ("openai/gpt-oss-120b", "groq"),
        ("meta-llama/llama-4-scout-17b-16e-instruct", "groq"),
        ("openai/gpt-4.1", "github"),
        ("@cf/meta/llama-3.3-70b-instruct-fp8-fast", "cloudflare"),
        ("deepseek/deepseek-chat-v3-0324:free", "openrouter"),
    ],
)
def test_resolve_reads_a_model_id_with_slashes_as_a_model_id(name: str, provider: str) -> None:
    catalog = bundled()
    assert catalog.resolve(name) == (Target(provider, catalog.providers[provider].models[name]),)


def test_resolve_provider_slash_model_id_with_slashes_stays_on_that_provider() -> None:
    catalog = bundled()
    model = catalog.providers["groq"].models["openai/gpt-oss-120b"]
    assert catalog.resolve("groq/openai/gpt-oss-120b") == (Target("groq", model),)


def test_resolve_lists_the_providers_of_a_shared_model_chain_first() -> None:
    shared = """
[[providers.groq.models]]
id = "shared-model"
[[providers.cerebras.models]]
id = "shared-model"
[[providers.mistral.models]]
id = "shared-model"
[router]
chain = ["mistral/shared-model", "groq/llama-3.3-70b-versatile"]
"""
    catalog = configured(shared)
    # mistral leads because the chain names it; then groq and cerebras in catalog order.
    assert [t.provider for t in catalog.resolve("shared-model")] == ["mistral", "groq", "cerebras"]
    assert [t.provider for t in catalog.resolve("cerebras/shared-model")] == ["cerebras"]


@pytest.mark.parametrize(
    "name",
    ["no-such-model", "groq/no-such-model", "nobody/llama-3.3-70b-versatile", "", "auto", "/"],
)
def test_resolve_of_an_unknown_name_is_empty(name: str) -> None:
    assert bundled().resolve(name) == ()


# --- load_catalog ------------------------------------------------------------------------------


def test_load_catalog_without_a_file_is_the_bundled_catalog() -> None:
    assert load_catalog(None) == bundled()


def test_load_catalog_applies_the_file(tmp_path: Path) -> None:
    path = tmp_path / "freellm.toml"
    path.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    assert load_catalog(path) == configured(DESIGN_EXAMPLE)


def test_load_catalog_error_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "freellm.toml"
    path.write_text(_MODEL + "rpm = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    assert caught.value.path == f"{path}: providers.groq.models[0].rpm"
    assert str(caught.value).startswith(f"{path}: providers.groq.models[0].rpm: ")


def test_load_catalog_of_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "freellm.toml"
    path.write_text("[providers\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    assert caught.value.path == str(path)
    assert "not valid TOML" in caught.value.problem


def test_load_catalog_of_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    assert caught.value.path == str(path)
    assert "cannot read it" in caught.value.problem


# --- property: what is written is what is read ---------------------------------------------------

_ID_CHARS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters='"\\')
_COUNT = st.none() | st.integers(0, 2**63 - 1)
_FLAG = st.none() | st.booleans()
_FIELDS = ("rpm", "rpd", "tpm", "tpd", "concurrency", "context", "max_output")
_FLAGS = ("tools", "vision", "json", "account")

model_entries = st.fixed_dictionaries(
    {
        # Ids the catalog already has (the entry replaces that model), or new ones.
        "id": st.sampled_from(["llama-3.3-70b-versatile", "openai/gpt-oss-120b", "gemini-2.5-pro"])
        | st.text(_ID_CHARS, min_size=1, max_size=40),
        **dict.fromkeys(_FIELDS, _COUNT),
        **dict.fromkeys(_FLAGS, _FLAG),
    }
)


def toml_model(provider: str, entry: dict[str, Any]) -> str:
    lines = [f"[[providers.{provider}.models]]", f'id = "{entry["id"]}"']
    for name in (*_FIELDS, *_FLAGS):
        value = entry[name]
        if value is not None:
            lines.append(f"{name} = {str(value).lower()}")
    return "\n".join(lines) + "\n"


def expected_spec(entry: dict[str, Any]) -> ModelSpec:
    return ModelSpec(
        id=entry["id"],
        caps=Caps(**{name: entry[name] for name in ("rpm", "rpd", "tpm", "tpd", "concurrency")}),
        context=entry["context"],
        max_output=entry["max_output"],
        tools=bool(entry["tools"]),
        vision=bool(entry["vision"]),
        json=bool(entry["json"]),
        account=bool(entry["account"]),
    )


@settings(max_examples=60)
@given(
    provider=st.sampled_from(["groq", "google", "mylocal"]),
    entries=st.lists(model_entries, min_size=1, max_size=4, unique_by=lambda e: e["id"]),
)
def test_any_valid_model_entries_apply_as_written(
    provider: str, entries: list[dict[str, Any]]
) -> None:
    head = '[providers.mylocal]\ndialect = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
    text = head + "".join(toml_model(provider, entry) for entry in entries)
    catalog = configured(text)
    models = catalog.providers[provider].models
    # Written models come last, in the order written (a replaced one moves to the end).
    assert list(models)[-len(entries) :] == [entry["id"] for entry in entries]
    for entry in entries:
        assert models[entry["id"]] == expected_spec(entry)
        assert catalog.resolve(f"{provider}/{entry['id']}") == (
            Target(provider, expected_spec(entry)),
        )
