"""Sealing and opening secrets in a short-lived helper process, for the server.

The server needs the vault only at start-up (the unified key, the provider keys) and when keys
are added while it runs. Loading ``cryptography`` for that would keep OpenSSL's bindings (about
6.5 MB) resident for the life of the process, against an idle-RSS budget of 45 MB. So the server
hands the work to ``python -m freellm.shell.vault_process``: the master key and the blobs go in on
standard input (never in argv or the environment), the results come back on standard output,
and the helper exits. The CLI, a short-lived process itself, uses :class:`Vault` directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import trio

from freellm.shell.secrets import SecretsError, Vault

__all__ = ["RemoteVault"]


class RemoteVault:
    """The :class:`~freellm.shell.secrets.Vault` operations the server needs, run out of process.

    Raises :class:`~freellm.shell.secrets.SecretsError` with the helper's message when a blob
    does not open, and ``RuntimeError`` if the helper itself fails.
    """

    def __init__(self, master_key: bytes) -> None:
        self._master = master_key.hex()

    def __repr__(self) -> str:
        return "RemoteVault(<master key hidden>)"

    async def unseal_many(self, items: Sequence[tuple[str, str, bytes]]) -> list[str]:
        """The secrets of ``(key id, provider, blob)`` items, in order."""
        if not items:
            return []
        request = {"op": "unseal", "items": [[k, p, blob.hex()] for k, p, blob in items]}
        result: list[str] = await self._run(request)
        return result

    async def seal(self, key_id: str, provider: str, secret: str) -> bytes:
        result: str = await self._run({"op": "seal", "items": [[key_id, provider, secret]]})
        return bytes.fromhex(result)

    async def _run(self, request: dict[str, Any]) -> Any:
        payload = json.dumps({"master": self._master, **request}).encode()
        done = await trio.run_process(
            [sys.executable, "-m", "freellm.shell.vault_process"],
            stdin=payload,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            raise RuntimeError(
                f"the vault helper failed (exit {done.returncode}): "
                f"{done.stderr.decode(errors='replace')[-500:]}"
            ) from None
        if "error" in answer:
            raise SecretsError(answer["error"])
        return answer["result"]


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    vault = Vault(bytes.fromhex(request["master"]))
    try:
        if request["op"] == "unseal":
            return {
                "result": [vault.unseal(k, p, bytes.fromhex(b)) for k, p, b in request["items"]]
            }
        ((key_id, provider, secret),) = request["items"]
        return {"result": vault.seal(key_id, provider, secret).hex()}
    except SecretsError as exc:
        return {"error": str(exc)}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_serve(json.loads(sys.stdin.buffer.read()))))
