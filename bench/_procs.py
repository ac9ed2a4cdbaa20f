"""The processes: starting, stopping and pinning them, and their CPU and RSS from /proc."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import attrs
import trio

RSS_SAMPLE_S: Final = 0.05


@attrs.frozen
class Flavor:
    """How freellm is configured for one upstream flavor: its provider id, the model both name,
    and the path under which the upstream serves (as the fake of that flavor does)."""

    provider: str
    model: str
    own: bool  # a provider of the user's own (not in the catalog): the config names its dialect
    prefix: str
    ratelimit_headers: bool  # the fast upstream sends Groq's rate-limit headers


FLAVORS: Final = {
    "groq": Flavor("groq", "llama-3.3-70b-versatile", False, "/openai/v1", True),
    "openai": Flavor("benchfake", "fake-model", True, "/v1", False),
}


# --- processes -----------------------------------------------------------------------------------


class Children:
    """Every process the bench starts, each in a session of its own (a Ctrl-C reaches only the
    bench, which then stops them in reverse order: SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        argv: Sequence[str],
        *,
        output: Path,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with output.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.running.append(process)
        return process

    def stop_all(self, grace: float = 5.0) -> None:
        for process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.running):
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


def wait_for_output(
    process: subprocess.Popen[bytes], output: Path, pattern: str, timeout: float
) -> re.Match[str]:
    """The first match of ``pattern`` in what ``process`` writes to ``output``.

    Raises ``RuntimeError`` (with the output) if the process exits or the time runs out first.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = output.read_text(errors="replace")
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return found
        if process.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
            raise RuntimeError(f"{process.args!r} {why} before printing {pattern!r}:\n{text}")
        time.sleep(0.05)


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``); 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_strings(pid: int, name: str) -> list[str]:
    """``/proc/<pid>/cmdline`` or ``environ``: its NUL-separated strings; [] if unreadable."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as strings:
            return [part.decode(errors="replace") for part in strings.read().split(b"\0") if part]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads, so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """The largest ``VmRSS`` of a process, sampled by a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()

    @contextlib.contextmanager
    def sampling(self) -> Iterator[PeakRss]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self._stop.clear()

    def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS"))
            if self._stop.wait(RSS_SAMPLE_S):
                return


def mib(kib: int) -> float:
    return kib / 1024


# --- the upstreams, each in its own process -------------------------------------------------------


async def serve_fake(flavor: str) -> None:
    """Serve an uncapped fake of ``flavor`` on 127.0.0.1 until SIGINT or SIGTERM; print its URL."""
    from freellm.sim.fakes import FakeCaps, open_fake_provider

    model = FLAVORS[flavor].model
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        fake_cm = open_fake_provider(flavor, models={model: FakeCaps()}, record=False)
        async with fake_cm as fake:
            print(f"fake {flavor} at {fake.base_url} pid {os.getpid()}", flush=True)
            async for _ in signals:
                return


# --- setting freellm up --------------------------------------------------------------------------


def config_text(flavor: Flavor, base_url: str) -> str:
    """The provider pointed at the upstream, its one model with no caps, and a chain of it."""
    lines = [f"[providers.{flavor.provider}]"]
    if flavor.own:
        lines.append('dialect = "openai"')
    lines += [
        f'base_url = "{base_url}"',
        "",
        f"[[providers.{flavor.provider}.models]]  # no caps: the ledger never refuses",
        f'id = "{flavor.model}"',
        "context = 131072",
        "",
        "[router]",
        f'chain = ["{flavor.provider}/{flavor.model}"]',
        "",
    ]
    return "\n".join(lines)


def http_request(
    url: str, *, method: str = "GET", token: str | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client (which, unlike urllib, ignores proxy variables)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    try:
        connection.request(method, parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def taskset(pin: bool, cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if pin else []


def run_cli(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> str:
    """Run a ``freellm`` command to completion; its output, or ``RuntimeError`` if it failed."""
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-6:])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def own_cpu_seconds() -> float:
    """CPU time of this process and of its children waited for (wrk): the load generator."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _terminate(signum: int, frame: object) -> None:
    # The same way out as Ctrl-C: inside trio.run, trio's own SIGINT handler raises
    # KeyboardInterrupt where it is safe; elsewhere Python's does.
    signal.raise_signal(signal.SIGINT)


def run_stopping_everything(
    run: Callable[[contextlib.ExitStack], int], log: Callable[[str], None]
) -> int:
    """``run(stack)``, whose processes and files the stack stops and removes on the way out,
    however it goes: 1 on a ``RuntimeError`` (logged), 130 on Ctrl-C or SIGTERM.

    Ctrl-C and SIGTERM both leave through every ``finally`` (even where SIGINT was inherited
    ignored, as in a background job of a script)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with contextlib.ExitStack() as stack:
            return run(stack)
    except RuntimeError as exc:
        log(f"failed: {exc}")
        return 1
    except BaseException as exc:
        # Ctrl-C arrives bare, or inside trio.run wrapped in the nursery's exception group.
        rest = exc.split(KeyboardInterrupt)[1] if isinstance(exc, BaseExceptionGroup) else exc
        if rest is not None and not isinstance(rest, KeyboardInterrupt):
            raise
        log("interrupted; stopped everything")
        return 130
