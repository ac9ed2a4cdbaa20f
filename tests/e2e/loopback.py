"""A freellm server for tests that send it anything at all (the fuzz tests, schemathesis): in
front of one fake groq, with every other provider of the catalog pointed at a loopback port that
refuses connections, so that no body (a key added for any provider, any model named) can make
it reach beyond this machine.

:func:`loopback_server` runs it in the test's own trio loop; :func:`loopback_server_in_thread`
runs it in a thread of its own, for blocking clients driven from a plain test (schemathesis'
pytest integration), with :meth:`Threaded.call` to look at it from there.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import trio
from harness import Proxy, in_thread, running_proxy

from freellm.shell.config import bundled_catalog
from freellm.sim.fakes import FakeCaps, FakeProvider, open_closed_port, open_fake_provider
from freellm.sim.fakes.replies import ChatRequest

T = TypeVar("T")

GROQ_MODEL = "llama-3.3-70b-versatile"
GROQ_KEY = "gsk-loopback-1"


@attrs.frozen
class Served:
    proxy: Proxy
    groq: FakeProvider

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def bearer(self) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", f"Bearer {self.proxy.key}".encode())]

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.proxy.key}"}


def loopback_config(
    fakes: Mapping[str, FakeProvider], nowhere: str, chain: Sequence[str], model: str
) -> str:
    """Every provider of the catalog pointed at loopback: the fakes at themselves, the rest at
    ``nowhere`` (an origin that refuses connections); ``model`` is groq's table."""
    parts = []
    for provider in bundled_catalog().providers:
        origin = fakes[provider].base_url if provider in fakes else f"{nowhere}/v1"
        parts.append(f'[providers.{provider}]\nbase_url = "{origin}"\n')
    parts.append(model)
    parts.append("[router]\nchain = [" + ", ".join(f'"{c}"' for c in chain) + "]\n")
    return "\n".join(parts)


GROQ_TABLE = (
    f'[[providers.groq.models]]\nid = "{GROQ_MODEL}"\ncontext = 131072\n'
    "tools = true\nvision = true\njson = true\n"
)


# The native dialects' fakes (:func:`loopback_server` with ``natives=True``): catalog provider,
# the fake's flavor, a model and a key.
NATIVES: Final = (
    ("google", "gemini", "gemini-2.5-flash", "AIza-loopback-1"),
    ("cohere", "cohere", "command-a-03-2025", "co-loopback-1"),
)


def native_table(provider: str, model: str) -> str:
    return (
        f'[[providers.{provider}.models]]\nid = "{model}"\ncontext = 131072\n'
        "tools = true\nvision = true\njson = true\n"
    )


@asynccontextmanager
async def loopback_server(
    data_dir: Path,
    *,
    reply_tokens: Callable[[ChatRequest], int | None] | None = None,
    natives: bool = False,
) -> AsyncIterator[Served]:
    """freellm in front of one fake groq with one key (a model that takes tools, images and
    JSON mode), no caps anywhere: a fuzz run sends hundreds of requests. ``reply_tokens``
    sizes the fake's replies (see :mod:`freellm.sim.fakes.replies`); ``natives`` adds a fake
    Gemini and a fake Cohere (:data:`NATIVES`), each with a key, outside the chain."""
    async with contextlib.AsyncExitStack() as stack:
        groq = await stack.enter_async_context(
            open_fake_provider(
                "groq", keys=[GROQ_KEY], models={GROQ_MODEL: FakeCaps()}, reply_tokens=reply_tokens
            )
        )
        nowhere = await stack.enter_async_context(open_closed_port())
        fakes, tables, keys = {"groq": groq}, [GROQ_TABLE], {"groq": [GROQ_KEY]}
        for provider, flavor, model, key in NATIVES if natives else ():
            fakes[provider] = await stack.enter_async_context(
                open_fake_provider(flavor, keys=[key], models={model: FakeCaps()})
            )
            tables.append(native_table(provider, model))
            keys[provider] = [key]
        config = loopback_config(fakes, nowhere, [f"groq/{GROQ_MODEL}"], "\n".join(tables))
        async with running_proxy(data_dir, config, keys) as proxy:
            yield Served(proxy, groq)


@attrs.frozen
class Threaded:
    served: Served
    token: trio.lowlevel.TrioToken

    @property
    def url(self) -> str:
        return self.served.url

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` in the server's trio thread."""
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def key(self) -> str:
        """The unified key as it is now (``POST /api/token/regenerate`` changes it)."""
        return trio.from_thread.run_sync(lambda: self.served.proxy.key, trio_token=self.token)


@contextmanager
def loopback_server_in_thread(data_dir: Path) -> Iterator[Threaded]:
    """:func:`loopback_server` on a trio loop in a thread of its own."""
    with in_thread(lambda: loopback_server(data_dir)) as (served, token):
        yield Threaded(served, token)
