"""Named chains (``auto:NAME``), model aliases, model kinds, and what a model that cannot think
is sent: config, router and exchange."""

from __future__ import annotations

import json
from typing import Any

import pytest

from freellm.core.catalog import Catalog, ConfigError, ModelKind, apply_config, with_chain
from freellm.core.chat import ChatShape, inspect_request
from freellm.core.exchange import Exchange
from freellm.core.router import Key, RouteRequest, RouterState, Topology, plan

NOW = 1_780_000_000.0


def provider(port: int, *models: dict[str, Any]) -> dict[str, Any]:
    return {"dialect": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "models": list(models)}


CONFIG: dict[str, Any] = {
    "providers": {
        "alpha": provider(
            9001,
            {"id": "fast", "rpm": 30},
            {"id": "coder", "rpm": 10, "reasoning": True},
            {"id": "embed-a", "kind": "embedding", "dimensions": 8, "rpm": 5},
        ),
        "beta": provider(
            9002,
            {"id": "coder", "rpm": 10},
            {"id": "embed-a", "kind": "embedding", "dimensions": 8},
            {"id": "embed-b", "kind": "embedding", "dimensions": 4},
        ),
    },
    "router": {
        "chain": ["alpha/fast", "beta/coder"],
        "chains": {
            "coding": ["beta/coder", "alpha/coder"],
            "embeddings": ["beta/embed-b", "alpha/embed-a", "beta/embed-a"],
        },
    },
}


def catalog(config: dict[str, Any] = CONFIG) -> Catalog:
    return apply_config(Catalog(), config)


def state(*keys: Key, config: dict[str, Any] = CONFIG) -> RouterState:
    keys = keys or (Key("alpha", "a1", "s"), Key("beta", "b1", "s"))
    return RouterState(Topology(catalog(config), keys))


def names(model: str, current: RouterState, kind: ModelKind = ModelKind.CHAT) -> list[str]:
    request = RouteRequest(model=model, prompt_tokens=10, kind=kind)
    return [slot.name for slot in plan(current, request, now=NOW)]


# --- config -------------------------------------------------------------------------------------


def test_named_chains_are_read_with_their_targets() -> None:
    chains = catalog().chains
    assert [t.name for t in chains["coding"]] == ["beta/coder", "alpha/coder"]
    assert catalog().settings.chains["embeddings"][0] == "beta/embed-b"


@pytest.mark.parametrize(
    ("chains", "path"),
    [
        ({"Coding": ["alpha/fast"]}, "router.chains.Coding"),
        ({"auto": ["alpha/fast"]}, "router.chains.auto"),
        ({"coding": "alpha/fast"}, "router.chains.coding"),
        ({"coding": ["alpha/nope"]}, "router.chains.coding[0]"),
        ({"coding": ["alpha/fast", "alpha/fast"]}, "router.chains.coding[1]"),
    ],
)
def test_a_bad_named_chain_is_refused_naming_it(chains: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        apply_config(catalog(), {"router": {"chains": chains}})
    assert caught.value.path == path


def test_a_stored_named_chain_replaces_the_configs_and_keeps_the_others() -> None:
    changed = with_chain(catalog(), ["alpha/coder"], "coding")
    assert [t.name for t in changed.chains["coding"]] == ["alpha/coder"]
    assert changed.chains["embeddings"] == catalog().chains["embeddings"]
    assert changed.chain_targets == catalog().chain_targets
    made = with_chain(catalog(), ["alpha/fast"], "quick")
    assert [t.name for t in made.chains["quick"]] == ["alpha/fast"]


def test_claude_names_go_to_auto_unless_the_config_says_otherwise() -> None:
    assert catalog().alias("claude-sonnet-4-5") == "auto"
    assert catalog().alias("fast") == "fast"
    mine = apply_config(catalog(), {"router": {"aliases": {"claude-*": "auto:coding"}}})
    assert mine.alias("claude-opus-4-1") == "auto:coding"
    assert mine.settings.aliases == (("claude-*", "auto:coding"),)
    more = apply_config(catalog(), {"router": {"aliases": {"gpt-4o*": "alpha/fast"}}})
    assert more.alias("gpt-4o-mini") == "alpha/fast"
    assert more.alias("claude-3-haiku") == "auto"  # the default stays beside the new one


@pytest.mark.parametrize("target", ["auto:nothing", "no-such-model", "gamma/fast", ""])
def test_an_alias_to_nothing_routable_is_refused(target: str) -> None:
    with pytest.raises(ConfigError) as caught:
        apply_config(catalog(), {"router": {"aliases": {"x-*": target}}})
    assert caught.value.path.startswith("router.aliases")


def test_embedding_fields_are_read_and_checked() -> None:
    model = catalog().providers["alpha"].models["embed-a"]
    assert model.kind is ModelKind.EMBEDDING
    assert model.dimensions == 8
    with pytest.raises(ConfigError) as caught:
        apply_config(catalog(), {"providers": {"alpha": {"models": [{"id": "e", "kind": "x"}]}}})
    assert caught.value.path == "providers.alpha.models[0].kind"
    with pytest.raises(ConfigError) as caught:
        apply_config(
            catalog(), {"providers": {"alpha": {"models": [{"id": "e", "dimensions": 0}]}}}
        )
    assert caught.value.path == "providers.alpha.models[0].dimensions"


# --- routing ------------------------------------------------------------------------------------


def test_auto_name_follows_its_chain_and_auto_the_default_one() -> None:
    current = state()
    assert names("auto:coding", current) == ["beta/coder", "alpha/coder"]
    assert names("auto", current) == ["alpha/fast", "beta/coder"]
    assert names("claude-3-5-haiku", current) == ["alpha/fast", "beta/coder"]


def test_an_unknown_chain_is_an_unknown_model() -> None:
    request = RouteRequest(model="auto:nothing", prompt_tokens=10)
    candidates = plan(state(), request, now=NOW)
    assert list(candidates) == []
    assert candidates.no_capacity().unknown_model


def test_a_named_chain_walks_only_the_targets_that_have_keys() -> None:
    assert names("auto:coding", state(Key("alpha", "a1", "s"))) == ["alpha/coder"]


def test_chat_never_reaches_an_embedding_model_nor_embeddings_a_chat_model() -> None:
    current = state()
    assert names("embed-a", current) == []
    assert names("coder", current, ModelKind.EMBEDDING) == []
    assert names("embed-a", current, ModelKind.EMBEDDING) == ["alpha/embed-a", "beta/embed-a"]


def test_auto_for_embeddings_is_one_model_on_every_key_that_serves_it() -> None:
    """The first keyed model of the embeddings chain, and only it: vectors do not mix."""
    both = state()
    assert names("auto", both, ModelKind.EMBEDDING) == ["beta/embed-b"]
    only_alpha = state(Key("alpha", "a1", "s"), Key("alpha", "a2", "s"))
    assert names("auto", only_alpha, ModelKind.EMBEDDING) == ["alpha/embed-a"] * 2


def test_auto_for_embeddings_with_no_embeddings_chain_is_an_unknown_model() -> None:
    config = {**CONFIG, "router": {"chain": ["alpha/fast"]}}
    request = RouteRequest(model="auto", prompt_tokens=10, kind=ModelKind.EMBEDDING)
    candidates = plan(state(config=config), request, now=NOW)
    assert list(candidates) == []
    assert candidates.no_capacity().unknown_model


# --- what a model that cannot think is sent -----------------------------------------------------


def sent_body(model: str) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "high",
    }
    shape = inspect_request(body)
    assert isinstance(shape, ChatShape)
    current = state()
    ex = Exchange(current, shape, body, id="req_1", session=None, now=NOW)
    slot = next(ex.plan)
    ex.admit(slot, current, now=NOW)
    assert ex.attempt is not None
    sent: dict[str, Any] = json.loads(ex.attempt.outgoing.body)
    return sent


def test_reasoning_effort_reaches_only_a_model_that_thinks() -> None:
    assert sent_body("alpha/coder")["reasoning_effort"] == "high"
    assert "reasoning_effort" not in sent_body("beta/coder")
