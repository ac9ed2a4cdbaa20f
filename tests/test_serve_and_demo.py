"""`freellm serve` and `freellm demo` as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
import trio

FREELLM = [sys.executable, "-m", "freellm.cli"]


async def read_until(process: trio.Process, marker: str, *, within: float = 30.0) -> str:
    """What the process printed up to and including ``marker``."""
    assert process.stdout is not None
    seen = ""
    with trio.fail_after(within):
        while marker not in seen:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise AssertionError(f"exited before printing {marker!r}: {seen}")
            seen += chunk.decode()
    return seen


async def stop(process: trio.Process) -> int:
    process.send_signal(signal.SIGINT)
    with trio.fail_after(15):
        return await process.wait()


async def test_serve_on_an_empty_data_dir_needs_no_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ENCRYPTION_KEY", "HOST", "PORT")}
    env["FREELLM_DATA_DIR"] = str(tmp_path / "data")
    process = await trio.lowlevel.open_process(
        [*FREELLM, "serve", "--port", "0"], stdout=-1, env=env
    )
    try:
        printed = await read_until(process, "freellm keys add")
        url = re.search(r"serving (http://127\.0\.0\.1:\d+)/v1", printed)
        key = re.search(r"(freellm-[A-Za-z0-9_-]{43,})", printed)
        assert url is not None
        assert key is not None
        async with httpx.AsyncClient(base_url=url.group(1)) as client:
            assert (await client.get("/livez")).status_code == 200
            models = await client.get(
                "/v1/models", headers={"authorization": f"Bearer {key.group(1)}"}
            )
            assert models.json()["data"][0]["id"] == "auto"
            refused = await client.get("/v1/models", headers={"authorization": "Bearer nope"})
            assert refused.status_code == 401
    finally:
        assert await stop(process) == 0
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data" / "freellm.db").exists()


async def test_demo_answers_the_curl_it_prints() -> None:
    process = await trio.lowlevel.open_process([*FREELLM, "demo", "--port", "0"], stdout=-1)
    try:
        printed = await read_until(process, "Ctrl-C stops it.")
        url = re.search(r"curl (http://127\.0\.0\.1:\d+/v1/chat/completions)", printed)
        key = re.search(r"Bearer (freellm-[A-Za-z0-9_-]+)", printed)
        body = re.search(r"-d '(.+)'", printed)
        assert url is not None
        assert key is not None
        assert body is not None
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                url.group(1),
                headers={
                    "authorization": f"Bearer {key.group(1)}",
                    "content-type": "application/json",
                },
                content=body.group(1),
            )
            assert answer.status_code == 200
            assert answer.headers["x-routed-via"] == "groq/llama-3.3-70b-versatile"
            assert answer.json()["choices"][0]["message"]["content"] == "fake-groq says: Hello!"
            for model in ("google/gemini-2.5-flash", "cohere/command-a-03-2025"):
                assert f'"{model}"' in printed
                native = await client.post(
                    url.group(1),
                    headers={"authorization": f"Bearer {key.group(1)}"},
                    json={**json.loads(body.group(1)), "model": model},
                )
                assert native.status_code == 200, native.text
                assert native.headers["x-routed-via"] == model
                assert native.json()["choices"][0]["message"]["content"].endswith("says: Hello!")
            base = url.group(1).removesuffix("/chat/completions")
            bearer = {"authorization": f"Bearer {key.group(1)}"}
            assert "/v1/embeddings" in printed
            vectors = await client.post(
                f"{base}/embeddings", headers=bearer, json={"model": "auto", "input": ["a", "b"]}
            )
            assert vectors.status_code == 200, vectors.text
            assert vectors.json()["model"] == "gemini-embedding-001"
            assert [item["index"] for item in vectors.json()["data"]] == [0, 1]
            message = await client.post(
                f"{base}/messages",
                headers={"x-api-key": key.group(1), "anthropic-version": "2023-06-01"},
                json={
                    "model": "claude-sonnet-4-5",  # routes as auto
                    "max_tokens": 64,
                    "messages": USER,
                    "metadata": {"user_id": "a new conversation"},  # no sticky model yet
                },
            )
            assert message.status_code == 200, message.text
            assert message.json()["content"][0]["text"] == "fake-groq says: Hello!"
    finally:
        assert await stop(process) == 0


USER = [{"role": "user", "content": "Hello!"}]

SERVER_MODULES = """
import sys, trio
from pathlib import Path
from freellm.shell.runtime import open_runtime

async def main():
    env = {"ENCRYPTION_KEY": "ab" * 32}
    async with open_runtime(Path(sys.argv[1]), None, env=env, probes=False) as runtime:
        loaded = "cryptography" in sys.modules
        print(len(runtime.holder.state.topology.keys), runtime.unified_key[:8], loaded)

trio.run(main)
"""


async def test_the_server_opens_secrets_without_loading_openssl_bindings(tmp_path: Path) -> None:
    """cryptography's ~6.5 MB stay out of the server: a helper process opens the secrets."""
    env = {**os.environ, "ENCRYPTION_KEY": "ab" * 32, "FREELLM_DATA_DIR": str(tmp_path)}
    await trio.run_process([*FREELLM, "keys", "add", "groq", "gsk-example"], env=env)
    done = await trio.run_process(
        [sys.executable, "-c", SERVER_MODULES, str(tmp_path)], capture_stdout=True, env=env
    )
    assert done.stdout.decode().split() == ["1", "freellm-", "False"]


@pytest.mark.parametrize("command", ["serve", "demo"])
async def test_a_port_in_use_says_which_and_how_to_pick_another(
    tmp_path: Path, command: str
) -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "ENCRYPTION_KEY": "ab" * 32, "FREELLM_DATA_DIR": str(tmp_path)}
        done = await trio.run_process(
            [*FREELLM, command, "--port", str(port)],
            env=env,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 2
    message = done.stderr.decode()
    assert message == (
        f"freellm: port {port} on 127.0.0.1 is already in use: stop what holds it, or pick"
        " another port with --port N (or PORT=N)\n"
    )


async def test_a_dot_env_in_the_working_directory_sets_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "from-dot-env"
    (tmp_path / ".env").write_text(f"FREELLM_DATA_DIR={data}\nENCRYPTION_KEY={'cd' * 32}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ENCRYPTION_KEY", "FREELLM_DATA_DIR")}
    first = await trio.run_process([*FREELLM, "token"], env=env, cwd=tmp_path, capture_stdout=True)
    assert (data / "freellm.db").exists()
    assert not (data / "secret.key").exists()  # the key came from .env
    # The real environment wins over .env.
    elsewhere = tmp_path / "elsewhere"
    env["FREELLM_DATA_DIR"] = str(elsewhere)
    await trio.run_process([*FREELLM, "token"], env=env, cwd=tmp_path, capture_stdout=True)
    assert (elsewhere / "freellm.db").exists()
    again = await trio.run_process(
        [*FREELLM, "token"],
        env={**env, "FREELLM_DATA_DIR": str(data)},
        cwd=tmp_path,
        capture_stdout=True,
    )
    assert again.stdout == first.stdout
