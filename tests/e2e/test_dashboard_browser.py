"""The dashboard in a real browser (Debian's chromium, through Playwright) against a real server
in front of fake providers: what a user does, and what they should see.

Every page is also checked with axe-core and photographed, light and dark, laptop and phone, into
``screenshots/`` (git-ignored; ``make screenshots`` makes them on demand), with the page weights.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Literal

import httpx
import pytest
from browser import (
    CHAIN,
    LAPTOP,
    PHONE,
    SCREENSHOTS,
    Served,
    axe_violations,
    launch,
    log_in,
    served,
)
from playwright.sync_api import Browser, Page, Response, expect, sync_playwright

PAGES = ["/", "/keys", "/chain", "/playground", "/analytics", "/quotas"]
MAX_PAGE_BYTES = 150_000
CONVERSATIONS = itertools.count()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "data") as running:
        yield running


@pytest.fixture
def console_errors() -> list[str]:
    """The errors the page logs or throws: none, unless a test expects them (and clears them)."""
    return []


@pytest.fixture
def page(browser: Browser, server: Served, console_errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    assert console_errors == []


def chat(server: Served, model: str = "auto") -> httpx.Response:
    """A request of a new conversation (so no sticky session applies), as any OpenAI client
    would send it."""
    words = f"hello from the browser tests, conversation {next(CONVERSATIONS)}"
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": words}]},
        headers={"authorization": f"Bearer {server.key}"},
        timeout=10,
    )


def test_a_wrong_key_is_refused_and_the_right_one_logs_in(
    page: Page, server: Served, console_errors: list[str]
) -> None:
    page.goto(f"{server.url}/keys")
    expect(page).to_have_url(re.compile(r"/login\?next=/keys$"))
    page.get_by_label("Unified key").fill("freellm-not-the-key")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#status")).to_have_text("That is not the unified key.")
    assert console_errors == [
        "Failed to load resource: the server responded with a status of 401 ()"
    ]
    console_errors.clear()
    page.get_by_label("Unified key").fill(server.key)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Keys")
    cookie = next(c for c in page.context.cookies() if c["name"] == "freellm_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"


def test_add_a_key_and_see_its_health(page: Page, server: Served) -> None:
    log_in(page, server)
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Provider", exact=True).select_option("groq")
    expect(page.locator("#hint")).to_contain_text("gsk_")
    page.get_by_label("Key", exact=True).fill("gsk-2")
    page.get_by_label("Label (optional)").fill("my second groq key")
    page.get_by_role("button", name="Add key").click()
    row = page.locator("tr", has_text="my second groq key")
    expect(row.locator(".badge")).to_have_text("healthy")
    expect(row).not_to_contain_text("gsk-2")  # only a masked tail, never the secret
    page.get_by_label("Provider", exact=True).select_option("groq")
    page.get_by_label("Key", exact=True).fill("gsk-stolen")
    page.get_by_label("Label (optional)").fill("a bad key")
    page.get_by_role("button", name="Add key").click()
    expect(page.locator("tr", has_text="a bad key").locator(".badge")).to_have_text("invalid")


def test_reorder_the_chain_and_the_next_request_follows_it(page: Page, server: Served) -> None:
    log_in(page, server)
    page.get_by_role("link", name="Fallback chain").click()
    entries = page.locator("#chain li .target")
    expect(entries).to_have_text(CHAIN)
    assert chat(server).headers["x-routed-via"] == CHAIN[0]

    # With the keyboard: focus the arrow button and press Enter.
    page.get_by_role("button", name=f"Move {CHAIN[1]} up").focus()
    page.keyboard.press("Enter")
    expect(entries).to_have_text([CHAIN[1], CHAIN[0]])
    expect(page.locator("#status")).to_contain_text("Saved.")
    assert chat(server).headers["x-routed-via"] == CHAIN[1]

    # With the mouse: drag the first entry's handle below the second.
    handle = page.locator("#chain li").nth(0).locator(".handle")
    target = page.locator("#chain li").nth(1)
    box = target.bounding_box()
    assert box is not None
    handle.hover()
    page.mouse.down()
    page.mouse.move(box["x"] + 40, box["y"] + box["height"] * 0.9, steps=12)
    page.mouse.up()
    expect(entries).to_have_text(CHAIN)
    expect(page.locator("#status")).to_contain_text("Saved.")
    assert chat(server).headers["x-routed-via"] == CHAIN[0]

    # Switching an entry off takes it out of routing, and it keeps its place.
    page.get_by_role("checkbox").first.uncheck()
    expect(page.locator("#status")).to_contain_text("disabled. Saved.")
    assert chat(server).headers["x-routed-via"] == CHAIN[1]
    page.reload()
    expect(entries).to_have_text(CHAIN)
    expect(page.get_by_role("checkbox").first).not_to_be_checked()


def test_make_a_named_chain_route_by_it_and_remove_it(page: Page, server: Served) -> None:
    log_in(page, server)
    page.get_by_role("link", name="Fallback chain").click()
    expect(page.locator("#chain li .target")).to_have_text(CHAIN)
    page.get_by_text("New chain").click()
    page.get_by_label("Name").fill("coding")
    page.get_by_label("First model").select_option(CHAIN[1])
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#status")).to_contain_text("Created the chain auto:coding.")
    expect(page.get_by_label("Chain", exact=True)).to_have_value("coding")
    expect(page.locator("#chain-model")).to_have_text("auto:coding")
    expect(page.locator("#chain li .target")).to_have_text([CHAIN[1]])
    assert page.url.endswith("/chain?name=coding")
    assert chat(server, "auto:coding").headers["x-routed-via"] == CHAIN[1]
    assert chat(server).headers["x-routed-via"] == CHAIN[0]  # auto keeps its own chain

    page.get_by_label("Add a model").select_option(CHAIN[0])
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#chain li .target")).to_have_text([CHAIN[1], CHAIN[0]])
    page.get_by_label("Chain", exact=True).select_option("auto")
    expect(page.locator("#chain li .target")).to_have_text(CHAIN)

    page.get_by_label("Chain", exact=True).select_option("coding")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove this chain").click()
    expect(page.locator("#status")).to_contain_text("Removed the chain auto:coding.")
    expect(page.get_by_label("Chain", exact=True)).to_have_value("auto")
    assert chat(server, "auto:coding").status_code == 404


def test_a_playground_message_streams_with_the_provider_shown(page: Page, server: Served) -> None:
    log_in(page, server)
    page.get_by_role("link", name="Playground").click()
    session = page.locator("#session").inner_text()
    assert session.startswith("pg-")
    page.get_by_label("System prompt").fill("Answer briefly.")
    page.get_by_label("Message").fill("Say hello")
    page.get_by_role("button", name="Send").click()
    reply = page.locator("#messages li.assistant").last
    expect(reply.locator(".meta")).to_contain_text(f"via {CHAIN[0]}")
    expect(reply.locator(".meta")).to_contain_text("first token")
    expect(reply.locator(".meta")).to_contain_text("tokens in")
    assert reply.locator(".text").inner_text().strip()
    # A second turn stays on the session (and so on the model).
    page.get_by_label("Message").fill("And again")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#messages li.assistant")).to_have_count(2)
    expect(page.locator("#messages li.assistant").last.locator(".meta")).to_contain_text(
        f"via {CHAIN[0]}"
    )
    assert server.fakes["groq"].served == 2


def test_a_request_shows_in_analytics_and_moves_the_quotas_live(page: Page, server: Served) -> None:
    log_in(page, server)
    page.get_by_role("link", name="Quotas").click()
    expect(page.locator("#live")).to_have_text("live")
    groq_rpm = page.locator('[data-slot^="groq/"] [role="meter"]').first
    expect(groq_rpm).to_have_attribute("aria-valuenow", "0")
    assert chat(server).status_code == 200
    expect(groq_rpm).to_have_attribute("aria-valuenow", "1")  # no reload: the event stream

    page.get_by_role("link", name="Analytics").click()
    page.get_by_role("button", name="1h").click()
    requests = page.locator('#totals [data-stat="Requests"] dd')
    expect(requests).to_have_text("1")
    expect(page.locator("#models")).to_contain_text(CHAIN[0])
    assert chat(server).status_code == 200
    expect(requests).to_have_text("2")  # live too


def test_disable_a_key_and_routing_avoids_it(page: Page, server: Served) -> None:
    log_in(page, server)
    page.get_by_role("link", name="Keys").click()
    groq_row = page.locator("tr", has_text="groq")
    groq_row.get_by_role("checkbox").uncheck()
    expect(page.locator("#status")).to_contain_text("saved")
    for _ in range(3):
        assert chat(server).headers["x-routed-via"] == CHAIN[1]
    assert server.fakes["groq"].served == 0
    groq_row.get_by_role("checkbox").check()
    expect(page.locator("#status")).to_contain_text("saved")
    assert chat(server).headers["x-routed-via"] == CHAIN[0]


def test_regenerate_the_unified_key_and_be_logged_out(page: Page, server: Served) -> None:
    old = server.key
    log_in(page, server)
    page.get_by_role("link", name="Keys").click()
    expect(page.locator("#unified-masked")).to_have_text(f"freellm-…{old[-4:]}")
    page.get_by_role("button", name="Regenerate…").click()
    page.get_by_role("button", name="Confirm").click()
    new = page.locator("#unified-value")
    expect(new).to_have_text(re.compile(r"^freellm-"))
    new_key = new.inner_text()
    assert new_key != old
    assert server.key == new_key
    assert chat(server).status_code == 200  # the new key works for clients at once
    page.get_by_role("link", name="Log in with the new key").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(f"{server.url}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    log_in(page, server, new_key)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_the_accessibility_check_and_is_photographed(
    browser: Browser, server: Served, scheme: Literal["light", "dark"]
) -> None:
    assert chat(server).status_code == 200  # something to show
    SCREENSHOTS.mkdir(exist_ok=True)
    weights: dict[str, int] = {}
    for device, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        for path in ["/login", *PAGES]:
            # axe is injected as an inline script, which the pages' policy refuses (the other
            # tests run under the policy, and fail on any violation it logs).
            context = browser.new_context(viewport=viewport, color_scheme=scheme, bypass_csp=True)
            context.set_default_timeout(10_000)
            page = context.new_page()
            if path != "/login":
                log_in(page, server)
            loaded: dict[str, str] = {}  # url: resource type, for this page's load only
            page.goto(f"{server.url}{path}")
            page.on("response", partial(_note, loaded=loaded))
            page.reload()
            expect(page.locator("body[data-ready]")).to_be_attached()
            weight = _weight(page, loaded)
            violations = axe_violations(page)
            assert violations == [], (path, scheme, device, violations)
            slug = path.strip("/") or "overview"
            page.screenshot(path=str(SCREENSHOTS / f"{slug}-{scheme}-{device}.png"), full_page=True)
            weights[slug] = max(weights.get(slug, 0), weight)
            context.close()
    lines = [f"{slug}: {size:,} bytes" for slug, size in sorted(weights.items())]
    (SCREENSHOTS / f"weights-{scheme}.txt").write_text("\n".join(lines) + "\n")
    assert set(weights) == {"login", *(p.strip("/") or "overview" for p in PAGES)}
    heavy = {slug: size for slug, size in weights.items() if size > MAX_PAGE_BYTES}
    assert heavy == {}, heavy


def _note(response: Response, *, loaded: dict[str, str]) -> None:
    loaded[response.url] = response.request.resource_type


def _weight(page: Page, loaded: dict[str, str]) -> int:
    """Bytes of HTML, JavaScript and CSS the page loaded (its API calls are data, not weight),
    fetched again with the page's own cookies once it is shown."""
    total = 0
    for url, kind in list(loaded.items()):  # the page may still be loading data
        if kind in ("document", "script", "stylesheet"):
            total += len(page.request.get(url).body())
    return total
