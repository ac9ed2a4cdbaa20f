"""Calling providers: a keep-alive pool per provider, and the deadlines of a call.

:class:`Upstreams` owns one :class:`~freellm.shell.transport.H11Transport` per provider. The
dispatch loop sends through it directly (:meth:`Upstreams.send`), below httpx's Request and
Response objects; the health probes use an ``httpx.AsyncClient`` on the same pool
(:meth:`Upstreams.client`). What to send and how to read the answer is the core's business
(:mod:`freellm.core.dialects.adapters`).

httpx's exceptions become :class:`~freellm.core.outcome.TransportError` values here and nowhere
else (:func:`transport_error`).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx

from freellm.core.catalog import PoolSettings, Timeouts
from freellm.core.dialects.adapters import Outgoing
from freellm.core.outcome import TransportError
from freellm.shell.transport import Answer, Connect, H11Transport

__all__ = ["Timeouts", "Upstreams", "open_upstreams", "transport_error"]


class Upstreams:
    """One keep-alive pool per provider (:class:`~freellm.shell.transport.H11Transport`).

    The dispatch loop calls :meth:`send`, which goes straight to the pool, below httpx's
    Request and Response objects (about a sixth of a proxied request's CPU); the health probes
    use :meth:`client`, an ``httpx.AsyncClient`` on the same pool. ``connect`` replaces how the
    pools open TCP streams (tests: a socket pair to a scripted server).
    """

    def __init__(
        self,
        timeouts: Timeouts,
        pool: PoolSettings | None = None,
        *,
        connect: Connect | None = None,
    ) -> None:
        self.timeouts = timeouts
        self.settings = pool or PoolSettings()
        self._waits: Mapping[str, float | None] = {
            "connect": timeouts.connect,
            "read": timeouts.idle,
            "write": timeouts.first_byte,
            "pool": timeouts.pool,
        }
        self._pools: dict[str, H11Transport] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._connect = connect
        # One TLS context for every pool (each would load the CA bundle again), made on first use.
        self._tls: ssl.SSLContext | None = None

    def _pool(self, provider: str) -> H11Transport:
        pool = self._pools.get(provider)
        if pool is None:
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            pool = self._pools[provider] = H11Transport(
                ssl_context=self._tls,
                max_connections=self.settings.max_connections,
                max_idle=self.settings.max_idle,
                connect=self._connect,
            )
        return pool

    def client(self, provider: str) -> httpx.AsyncClient:
        """An httpx client for ``provider``, on its pool, made on first use."""
        client = self._clients.get(provider)
        if client is None:
            t = self.timeouts
            client = self._clients[provider] = httpx.AsyncClient(
                timeout=httpx.Timeout(t.first_byte, connect=t.connect, read=t.idle),
                trust_env=False,
                transport=self._pool(provider),
            )
        return client

    async def send(self, provider: str, outgoing: Outgoing) -> Answer:
        """Send ``outgoing`` to ``provider`` and wait for the response head.

        Raises httpx's exceptions (:func:`transport_error` maps them).
        """
        headers = [(name.encode(), value.encode()) for name, value in outgoing.headers.items()]
        return await self._pool(provider).send(
            outgoing.method.encode(), outgoing.url, headers, outgoing.body, self._waits
        )

    def connections(self) -> tuple[int, int]:
        """(open, idle) connections to every provider."""
        pools = self._pools.values()
        return sum(p.open_connections() for p in pools), sum(p.idle_connections() for p in pools)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        pools, self._pools = list(self._pools.values()), {}
        for client in clients:
            await client.aclose()
        for pool in pools:
            await pool.aclose()


@asynccontextmanager
async def open_upstreams(
    timeouts: Timeouts | None = None,
    pool: PoolSettings | None = None,
    *,
    connect: Connect | None = None,
) -> AsyncIterator[Upstreams]:
    upstreams = Upstreams(timeouts or Timeouts(), pool, connect=connect)
    try:
        yield upstreams
    finally:
        await upstreams.aclose()


def transport_error(exc: httpx.HTTPError) -> TransportError:
    """The one place httpx's exception tree meets the core's outcome kinds.

    A request that found the provider's pool full for ``[timeouts] pool_s`` never reached the
    provider: it fails over as a connect error does, not as a timeout (which may have used it).
    """
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return TransportError.CONNECT
    if isinstance(exc, httpx.TimeoutException):
        return TransportError.TIMEOUT
    return TransportError.PROTOCOL
