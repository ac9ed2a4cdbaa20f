"""Running a real freellm server on loopback, in front of fake providers, for real clients.

These tests use real sockets, so they run on trio's real clock: the autojump clock would leap to
the next deadline whenever the server waits for a socket. Where a test needs time to pass, it
moves the proxy's and the fakes' clocks together (:class:`SharedClock`).
"""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio

from freellm.shell import vault_process
from freellm.shell.runtime import Runtime, open_runtime
from freellm.shell.secrets import SecretsError, Vault, load_master_key
from freellm.shell.store import open_store
from freellm.shell.upstream import Timeouts
from freellm.sim.fakes import FakeProvider
from freellm.web.server import serve_runtime

T = TypeVar("T")

ENCRYPTION_KEY = "5e" * 32

# The tests close every stream they open (``with``/``async with``), as a careful client does. The
# openai SDK still stops reading at ``[DONE]`` and closes only the response, leaving its chain of
# async generators (its own SSE decoder's, then its vendored httpx2's and httpcore2's body
# iterators) to the garbage collector, which trio reports as a ResourceWarning. httpx does the
# same with a request body the server answered (413) before reading it all. These generators are
# the client libraries', not freellm's: ignore exactly them, by name. httpcore2 renamed its body
# iterator in 2.17 (``PoolByteStream`` -> ``HTTP11ConnectionByteStream``); the lock file pins it.
CLIENT_GENERATORS = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object "
    "(AsyncStream._iter_events|SSEDecoder.aiter_bytes|Response.aiter_bytes"
    "|HTTP11ConnectionByteStream.__aiter__|PoolByteStream.__aiter__|ByteStream.__aiter__)"
    ":pytest.PytestUnraisableExceptionWarning"
)


def vault_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the servers a test starts run their vault helper in this process.

    A server seals and opens keys in a helper process (:mod:`freellm.shell.vault_process`),
    started twice as it starts; on a busy machine that is most of a start (0.3-0.5 s each). A
    test that starts a server per case and tests something else can take the helper's own
    function, the same request and answer, without its process.
    """

    async def run_here(vault: vault_process.RemoteVault, request: dict[str, Any]) -> Any:
        answer = vault_process._serve({"master": vault._master, **request})
        if "error" in answer:
            raise SecretsError(answer["error"])
        return answer["result"]

    monkeypatch.setattr(vault_process.RemoteVault, "_run", run_here)


@attrs.define
class SharedClock:
    """Epoch seconds that a test can move forward: the proxy and the fakes read the same one."""

    offset: float = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return trio.current_time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@attrs.frozen
class Proxy:
    url: str
    runtime: Runtime

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def key(self) -> str:
        return self.runtime.unified_key


def config_text(
    fakes: Mapping[str, FakeProvider], models: Mapping[str, str], chain: Sequence[str]
) -> str:
    """``[providers.X]`` pointing every provider at its fake, with the given model tables."""
    parts = []
    for provider, fake in fakes.items():
        parts.append(f'[providers.{provider}]\nbase_url = "{fake.base_url}"\n')
        parts.append(models.get(provider, ""))
    chain_list = ", ".join(f'"{entry}"' for entry in chain)
    parts.append(f"[router]\nchain = [{chain_list}]\n")
    return "\n".join(parts)


def _seal(vault: Vault, provider: str, secret: str, key_id: str) -> bytes:
    return vault.seal(key_id, provider, secret)


@asynccontextmanager
async def running_proxy(
    data_dir: Path,
    config: str,
    keys: Mapping[str, Sequence[str]],
    *,
    clock: Callable[[], float] = time.time,
    timeouts: Timeouts | None = None,
    add_keys: bool = True,
) -> AsyncIterator[Proxy]:
    """freellm serving on 127.0.0.1:0 with ``config`` and provider ``keys`` (provider: secrets)."""
    config_path = data_dir / "freellm.toml"
    await trio.to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
    await trio.Path(config_path).write_text(config, encoding="utf-8")
    env = {"ENCRYPTION_KEY": ENCRYPTION_KEY}
    if add_keys:
        vault = Vault(load_master_key(data_dir, ENCRYPTION_KEY))
        async with open_store(data_dir / "freellm.db") as store:
            for provider, secrets in keys.items():
                for secret in secrets:
                    await store.add_key(provider, "", partial(_seal, vault, provider, secret))
    runtime_cm = open_runtime(
        data_dir, config_path, env=env, clock=clock, timeouts=timeouts, probes=False
    )
    async with runtime_cm as runtime, trio.open_nursery() as nursery:
        url = await nursery.start(serve_runtime, runtime, "127.0.0.1", 0)
        try:
            yield Proxy(url, runtime)
        finally:
            nursery.cancel_scope.cancel()


@attrs.frozen
class Conformance:
    """What ``llm-comply --format openai-chat`` reported: failed checks (id: errors), skipped
    check ids, and the summary's counts."""

    failed: dict[str, Any]
    skipped: list[str]
    passed: int
    total: int


async def run_llm_comply(proxy: Proxy) -> Conformance:
    """The outside conformance suite (PyPI ``llm-comply``) against ``proxy``, model ``auto``."""
    command = [
            str(Path(sys.executable).parent / "llm-comply"),
            "--format", "openai-chat",
            "-u", proxy.base_url,
            "-k", proxy.key,
            "-m", "auto",
            "--json",
        ]  # fmt: skip
    done = await trio.run_process(command, capture_stdout=True, check=False)
    report = json.loads(done.stdout)
    results = report["results"]
    return Conformance(
        failed={r["id"]: r.get("errors") for r in results if r["status"] == "failed"},
        skipped=[r["id"] for r in results if r["status"] == "skipped"],
        passed=report["summary"]["passed"],
        total=report["summary"]["total"],
    )


@contextmanager
def in_thread(
    open_: Callable[[], AbstractAsyncContextManager[T]],
) -> Iterator[tuple[T, trio.lowlevel.TrioToken]]:
    """``open_()``'s value, entered on a trio loop in a thread of its own, and that loop's token
    (for ``trio.from_thread``): for blocking clients (a browser, a raw socket) that cannot run
    on the test's own loop. The context is left, and the thread joined, on the way out."""
    handoff: queue.Queue[tuple[T, trio.lowlevel.TrioToken, trio.CancelScope] | BaseException]
    handoff = queue.Queue()

    async def run() -> None:
        try:
            async with open_() as value:
                scope = trio.CancelScope()
                handoff.put((value, trio.lowlevel.current_trio_token(), scope))
                with scope:
                    await trio.sleep_forever()
        except BaseException as exc:
            handoff.put(exc)
            raise

    def quietly() -> None:
        with contextlib.suppress(BaseException):  # already handed to the test
            trio.run(run)

    thread = threading.Thread(target=quietly, name="freellm-in-thread", daemon=True)
    thread.start()
    got = handoff.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    value, token, scope = got
    try:
        yield value, token
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server thread did not stop"
