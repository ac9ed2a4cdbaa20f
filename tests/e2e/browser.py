"""A real browser against a real server: Debian's chromium driven by Playwright.

Playwright's sync API runs its own event loop, so the browser tests are plain (sync) tests, and
the server runs on trio in a thread of its own (:func:`served`): the fake providers and freellm,
as the other end-to-end tests run them. :meth:`Served.call` runs a trio function there (to look
at the runtime or a fake from the test).

Chromium is the distribution's (``.ci/run`` installs it); Playwright cannot download its own
here. As root it needs ``--no-sandbox`` (Playwright passes it); every host name but loopback is
mapped to nothing, so that the browser never reaches out of the machine.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio
from harness import Proxy, config_text, in_thread, running_proxy
from playwright.sync_api import Browser, Page, ViewportSize, expect

from freellm.sim.fakes import FakeCaps, FakeProvider, open_fake_provider

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).parents[2] / "screenshots"

GROQ_MODEL = "llama-3.3-70b-versatile"
CEREBRAS_MODEL = "qwen-3-235b-a22b-instruct-2507"
CHAIN = [f"groq/{GROQ_MODEL}", f"cerebras/{CEREBRAS_MODEL}"]
LAPTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}


@attrs.frozen
class Served:
    proxy: Proxy
    fakes: dict[str, FakeProvider]
    token: trio.lowlevel.TrioToken

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def key(self) -> str:
        return self.proxy.key

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` in the server's trio thread."""
        return trio.from_thread.run(fn, *args, trio_token=self.token)


def models(provider: str, model: str) -> str:
    return f'[[providers.{provider}.models]]\nid = "{model}"\ncontext = 131072\nrpm = 30\n'


@contextmanager
def served(data_dir: Path, keys: dict[str, list[str]] | None = None) -> Iterator[Served]:
    """freellm on 127.0.0.1:0 in front of fake groq and cerebras, in a thread; ``keys`` are
    stored before it starts (default: one valid key each)."""

    @asynccontextmanager
    async def open_() -> AsyncIterator[tuple[Proxy, dict[str, FakeProvider]]]:
        async with (
            open_fake_provider(
                "groq", keys=["gsk-1", "gsk-2"], models={GROQ_MODEL: FakeCaps()}
            ) as groq,
            open_fake_provider(
                "cerebras", keys=["csk-1"], models={CEREBRAS_MODEL: FakeCaps()}
            ) as cerebras,
        ):
            fakes = {"groq": groq, "cerebras": cerebras}
            config = config_text(
                fakes,
                {
                    "groq": models("groq", GROQ_MODEL),
                    "cerebras": models("cerebras", CEREBRAS_MODEL),
                },
                CHAIN,
            )
            stored = {"groq": ["gsk-1"], "cerebras": ["csk-1"]} if keys is None else keys
            async with running_proxy(data_dir, config, stored) as proxy:
                yield proxy, fakes

    with in_thread(open_) as ((proxy, fakes), token):
        yield Served(proxy, fakes, token)


def log_in(page: Page, server: Served, key: str | None = None) -> None:
    page.goto(f"{server.url}/login")
    page.get_by_label("Unified key").fill(key or server.key)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """What axe-core (vendored) finds on the page as it is now: WCAG 2.1 A and AA rules."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => (await axe.run(document, {runOnly: {type: 'tag', values:"
        " ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})).violations"
        ".map(v => ({id: v.id, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))"
    )
    return list(result)


def launch(playwright: Any) -> Browser:
    browser: Browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    return browser
